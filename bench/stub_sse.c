/* A native OpenAI-shaped upstream for the long-stream and memory benches: one thread, epoll, no libraries.

   Usage: stub_sse PORT [INTERVAL_MS [TOKENS]]

   It answers POST .../chat/completions over HTTP/1.1 with keep-alive. The first path segment picks the answer:

     /sse[:MS[:N]]/...   a chat-completion SSE stream: a role chunk at once, then N token chunks one every MS
                         milliseconds (defaults: the command line's INTERVAL_MS and TOKENS), then a finish chunk,
                         a usage chunk and `data: [DONE]`, in HTTP chunked encoding
     /midfail[:MS[:N]]/  the same stream, but after its N tokens an OpenAI error event instead of the end
     /err500/            HTTP 500 with an OpenAI error body
     /json/ (or any)     a chat.completion JSON body; any other path streams when the body says "stream":true

   Every chunk's id is "t" + the CLOCK_REALTIME microseconds at which it was written, so a client can tell how
   long a chunk took to reach it (for a chunk relayed by a gateway: the delay the gateway added, plus the
   client's own). The stub never waits on a client: output that does not fit the socket is kept and sent on
   EPOLLOUT; a peer that closes ends its stream. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { IDLE, STREAMING };
enum { M_SSE, M_MIDFAIL };

typedef struct Conn {
    int fd;
    int state;
    int mode;
    int heap_at;           /* index in the timer heap, -1 when not waiting */
    char *in; size_t in_len, in_cap;
    char *out; size_t out_len, out_cap, out_off;
    long interval_us;
    int tokens_left, tokens_total;
    int64_t due_us;        /* monotonic */
} Conn;

static long g_interval_ms = 50;
static int g_tokens = 400;
static Conn **g_heap; static int g_heap_len, g_heap_cap;
static int g_ep;

static int64_t mono_us(void) {
    struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}
static int64_t real_us(void) {
    struct timespec ts; clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- a min-heap of streaming connections by due time */
static void heap_swap(int a, int b) {
    Conn *t = g_heap[a]; g_heap[a] = g_heap[b]; g_heap[b] = t;
    g_heap[a]->heap_at = a; g_heap[b]->heap_at = b;
}
static void heap_up(int i) {
    while (i > 0) { int p = (i - 1) / 2; if (g_heap[p]->due_us <= g_heap[i]->due_us) break; heap_swap(i, p); i = p; }
}
static void heap_down(int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < g_heap_len && g_heap[l]->due_us < g_heap[m]->due_us) m = l;
        if (r < g_heap_len && g_heap[r]->due_us < g_heap[m]->due_us) m = r;
        if (m == i) return;
        heap_swap(i, m); i = m;
    }
}
static void heap_push(Conn *c) {
    if (g_heap_len == g_heap_cap) { g_heap_cap = g_heap_cap ? 2 * g_heap_cap : 1024; g_heap = realloc(g_heap, g_heap_cap * sizeof *g_heap); }
    g_heap[g_heap_len] = c; c->heap_at = g_heap_len++; heap_up(c->heap_at);
}
static void heap_remove(Conn *c) {
    int i = c->heap_at;
    if (i < 0) return;
    c->heap_at = -1;
    if (--g_heap_len == i) return;
    g_heap[i] = g_heap[g_heap_len]; g_heap[i]->heap_at = i;
    heap_up(i); heap_down(g_heap[i]->heap_at);
}

/* ---- output */
static void out_append(Conn *c, const char *p, size_t n) {
    if (c->out_len + n > c->out_cap) {
        while (c->out_len + n > c->out_cap) c->out_cap = c->out_cap ? 2 * c->out_cap : 4096;
        c->out = realloc(c->out, c->out_cap);
    }
    memcpy(c->out + c->out_len, p, n); c->out_len += n;
}
static void close_conn(Conn *c) {
    heap_remove(c);
    epoll_ctl(g_ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->in); free(c->out); free(c);
}
/* Write what is pending; 0 ok, -1 the connection died. Asks for EPOLLOUT while something is left. */
static int flush(Conn *c) {
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) {
                struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP, .data.ptr = c };
                epoll_ctl(g_ep, EPOLL_CTL_MOD, c->fd, &ev);
                return 0;
            }
            return -1;
        }
        c->out_off += n;
    }
    if (c->out_off) {
        struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP, .data.ptr = c };
        epoll_ctl(g_ep, EPOLL_CTL_MOD, c->fd, &ev);
    }
    c->out_off = c->out_len = 0;
    return 0;
}
/* One SSE event (`data: <json>\n\n`) as one HTTP chunk. */
static void out_event(Conn *c, const char *data, size_t n) {
    char head[32];
    int h = snprintf(head, sizeof head, "%zx\r\n", n + 8);
    out_append(c, head, h);
    out_append(c, "data: ", 6); out_append(c, data, n); out_append(c, "\n\n\r\n", 4);
}
static void out_chunk(Conn *c, const char *delta, const char *finish) {
    char buf[512];
    int n = snprintf(buf, sizeof buf,
        "{\"id\":\"t%lld\",\"object\":\"chat.completion.chunk\",\"created\":%lld,\"model\":\"bench-model\","
        "\"choices\":[{\"index\":0,\"delta\":%s,\"finish_reason\":%s}]}",
        (long long)real_us(), (long long)(real_us() / 1000000), delta, finish);
    out_event(c, buf, n);
}

static const char JSON_BODY[] =
    "{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion\",\"created\":0,\"model\":\"bench-model\","
    "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"ok\"},\"finish_reason\":\"stop\"}],"
    "\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1,\"total_tokens\":6}}";
static const char ERR_BODY[] =
    "{\"error\":{\"message\":\"the stub failed on purpose\",\"type\":\"server_error\",\"code\":null}}";

static void respond_plain(Conn *c, int status, const char *body) {
    char head[256];
    int h = snprintf(head, sizeof head, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                     "Connection: keep-alive\r\n\r\n", status, status == 200 ? "OK" : "Internal Server Error",
                     strlen(body));
    out_append(c, head, h); out_append(c, body, strlen(body));
}

/* The stream's next step, when its time has come: a token, or the end. Returns -1 if the connection died. */
static int stream_step(Conn *c) {
    if (c->tokens_left > 0) {  /* each token differs: LiteLLM ends a stream that repeats one chunk 100 times */
        char delta[64];
        snprintf(delta, sizeof delta, "{\"content\":\"tok%d \"}", c->tokens_total - c->tokens_left);
        out_chunk(c, delta, "null");
        c->tokens_left--;
    }
    if (c->tokens_left > 0) {
        c->due_us += c->interval_us;
        heap_push(c);
        return flush(c);
    }
    if (c->mode == M_MIDFAIL) {
        const char *e = ERR_BODY;
        out_event(c, e, strlen(e));
    } else {
        out_chunk(c, "{}", "\"stop\"");
        char buf[256];
        int n = snprintf(buf, sizeof buf,
            "{\"id\":\"t%lld\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"bench-model\",\"choices\":[],"
            "\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":%d,\"total_tokens\":%d}}",
            (long long)real_us(), c->tokens_total, c->tokens_total + 5);
        out_event(c, buf, n);
        out_event(c, "[DONE]", 6);
    }
    out_append(c, "0\r\n\r\n", 5);
    c->state = IDLE;
    return flush(c);
}

/* A whole request is in c->in[0..len): answer it. */
static int handle_request(Conn *c, size_t head_len, size_t total) {
    char *path = memchr(c->in, ' ', head_len);
    char seg[64] = "";
    if (path) {
        path++;
        if (*path == '/') path++;
        size_t i = 0;
        while (i < sizeof seg - 1 && path[i] && path[i] != '/' && path[i] != ' ') { seg[i] = path[i]; i++; }
        seg[i] = 0;
    }
    int stream = memmem(c->in + head_len, total - head_len, "\"stream\":true", 13) != NULL
              || memmem(c->in + head_len, total - head_len, "\"stream\": true", 14) != NULL;
    long interval = g_interval_ms; int tokens = g_tokens;
    int mode = -1;
    char *colon = strchr(seg, ':');
    if (colon) {
        *colon = 0;
        interval = strtol(colon + 1, &colon, 10);
        if (*colon == ':') tokens = (int)strtol(colon + 1, NULL, 10);
    }
    if (!strcmp(seg, "sse")) mode = M_SSE;
    else if (!strcmp(seg, "midfail")) mode = M_MIDFAIL;
    else if (!strcmp(seg, "err500")) { respond_plain(c, 500, ERR_BODY); return flush(c); }
    else if (strcmp(seg, "json") && stream) mode = M_SSE;
    if (mode < 0) { respond_plain(c, 200, JSON_BODY); return flush(c); }

    static const char head[] = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                               "Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n";
    out_append(c, head, sizeof head - 1);
    out_chunk(c, "{\"role\":\"assistant\",\"content\":\"\"}", "null");
    c->state = STREAMING; c->mode = mode;
    c->interval_us = interval * 1000; c->tokens_left = c->tokens_total = tokens;
    c->due_us = mono_us() + c->interval_us;
    if (tokens <= 0 || interval <= 0) {  /* no pacing: the whole stream at once */
        while (c->state == STREAMING) { c->due_us = 0; if (stream_step(c) < 0) return -1; heap_remove(c); }
        return 0;
    }
    heap_push(c);
    return flush(c);
}

/* Parse what has arrived; answer each whole request. -1: close the connection. */
static int on_input(Conn *c) {
    while (c->state == IDLE) {
        char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
        if (!end) return c->in_len > 65536 ? -1 : 0;
        size_t head_len = end + 4 - c->in;
        size_t body = 0;
        for (char *p = c->in; p < end; ) {
            char *nl = memmem(p, end - p, "\r\n", 2);
            if (!nl) nl = end;
            if (nl - p > 15 && !strncasecmp(p, "content-length:", 15)) body = strtoul(p + 15, NULL, 10);
            p = nl + 2;
        }
        if (c->in_len < head_len + body) return 0;
        if (handle_request(c, head_len, head_len + body) < 0) return -1;
        memmove(c->in, c->in + head_len + body, c->in_len - head_len - body);
        c->in_len -= head_len + body;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: %s PORT [INTERVAL_MS [TOKENS]]\n", argv[0]); return 2; }
    int port = atoi(argv[1]);
    if (argc > 2) g_interval_ms = atol(argv[2]);
    if (argc > 3) g_tokens = atoi(argv[3]);
    signal(SIGPIPE, SIG_IGN);
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(0x7f000001) };
    if (bind(ls, (struct sockaddr *)&addr, sizeof addr) || listen(ls, 4096)) { perror("bind/listen"); return 1; }
    g_ep = epoll_create1(0);
    struct epoll_event lev = { .events = EPOLLIN, .data.ptr = NULL };
    epoll_ctl(g_ep, EPOLL_CTL_ADD, ls, &lev);
    struct epoll_event evs[256];
    for (;;) {
        int timeout = -1;
        if (g_heap_len) {
            int64_t wait = g_heap[0]->due_us - mono_us();
            timeout = wait <= 0 ? 0 : (int)((wait + 999) / 1000);
        }
        int n = epoll_wait(g_ep, evs, 256, timeout);
        if (n < 0 && errno != EINTR) { perror("epoll_wait"); return 1; }
        for (int i = 0; i < n; i++) {
            Conn *c = evs[i].data.ptr;
            if (!c) {  /* the listener */
                for (;;) {
                    int fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK);
                    if (fd < 0) break;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    Conn *nc = calloc(1, sizeof *nc);
                    nc->fd = fd; nc->heap_at = -1; nc->in_cap = 4096; nc->in = malloc(nc->in_cap);
                    struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP, .data.ptr = nc };
                    epoll_ctl(g_ep, EPOLL_CTL_ADD, fd, &ev);
                }
                continue;
            }
            int dead = 0;
            if (evs[i].events & EPOLLOUT) dead = flush(c) < 0;
            if (!dead && evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
                for (;;) {
                    if (c->in_len == c->in_cap) { c->in_cap *= 2; c->in = realloc(c->in, c->in_cap); }
                    ssize_t r = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
                    if (r > 0) { c->in_len += r; continue; }
                    if (r == 0 || (errno != EAGAIN && errno != EINTR)) dead = 1;
                    break;
                }
                if (!dead) dead = on_input(c) < 0;
            }
            if (dead) close_conn(c);
        }
        int64_t now = mono_us();
        while (g_heap_len && g_heap[0]->due_us <= now) {
            Conn *c = g_heap[0];
            heap_remove(c);
            if (stream_step(c) < 0) close_conn(c);
        }
    }
}
