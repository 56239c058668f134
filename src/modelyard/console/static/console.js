// The console's client: every page reads and writes through the public JSON API with this helper.
// The session cookie goes along on its own (same origin); state changes carry the session's CSRF token.
"use strict";

(function () {
  function readJSON(id) {
    const el = document.getElementById(id);
    return el ? JSON.parse(el.textContent) : null;
  }

  class ApiError extends Error {
    constructor(status, message, param, code, body) {
      super(message);
      this.body = body === undefined ? null : body; // the whole answer: some carry more (node_errors, ...)
      this.status = status;
      this.param = param || null;
      this.code = code || null;
    }
  }

  // The error envelopes of the API's faces: OpenAI's {error:{message,param,code}}, the job API's {message}, ...
  function errorOf(status, body) {
    const e = body && (body.error || body.detail || body);
    if (e && typeof e === "object") {
      return new ApiError(status, e.message || e.msg || JSON.stringify(e), e.param || e.field, e.code || e.type, body);
    }
    return new ApiError(status, typeof e === "string" && e ? e : `The server answered ${status}.`, null, null, body);
  }

  const MEDIA_EXT = { png: "image", jpg: "image", jpeg: "image", webp: "image", gif: "image", mp4: "video",
    webm: "video", mov: "video", wav: "audio", mp3: "audio", ogg: "audio", flac: "audio", opus: "audio", aac: "audio" };
  const me = readJSON("me") || {};
  const params = readJSON("params") || {};

  const My = {
    me,
    params,
    ApiError,
    get org() { return me.organization ? me.organization.id : null; },
    get csrf() { return me.csrf_token || null; },
    can(scope) { return (me.scopes || []).includes(scope); },
    get operator() { return !!me.operator; },

    // fetch an API path; returns the parsed JSON (or the Response with {raw: true}); throws ApiError on >= 400
    async api(path, opts = {}) {
      const method = (opts.method || (opts.body !== undefined || opts.form ? "POST" : "GET")).toUpperCase();
      const headers = Object.assign({}, opts.headers || {});
      if (method !== "GET" && method !== "HEAD" && My.csrf) headers["X-CSRF-Token"] = My.csrf;
      let body;
      if (opts.form) {
        body = opts.form; // FormData: the browser sets the multipart boundary
      } else if (opts.body !== undefined) {
        headers["Content-Type"] = "application/json";
        body = JSON.stringify(opts.body);
      }
      const r = await fetch(path, { method, headers, body, credentials: "same-origin", signal: opts.signal });
      if (opts.raw && r.ok) return r;
      const text = await r.text();
      let data = null;
      if (text) {
        try { data = JSON.parse(text); } catch (_) { data = text; }
      }
      if (!r.ok) throw errorOf(r.status, data);
      return data;
    },

    // the org-scoped API: My.orgApi("/tokens") -> /api/organizations/<org>/tokens
    orgApi(path, opts) {
      return My.api(`/api/organizations/${encodeURIComponent(My.org)}${path}`, opts);
    },

    // ---------------------------------------------------------------- formatting
    num(n, digits = 0) {
      if (n === null || n === undefined || Number.isNaN(n)) return "–";
      return Number(n).toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: 0 });
    },
    // money is kept in micro-dollars (µ$) by the API; shown in dollars
    usd(micros) {
      if (micros === null || micros === undefined) return "–";
      const d = Number(micros) / 1e6;
      const digits = Math.abs(d) >= 1 || d === 0 ? 2 : 4;
      return (d < 0 ? "-$" : "$") + Math.abs(d).toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: digits });
    },
    ms(x) {
      if (x === null || x === undefined) return "–";
      const v = Number(x);
      return v >= 1000 ? (v / 1000).toFixed(v >= 10000 ? 0 : 1) + " s" : Math.round(v) + " ms";
    },
    bytes(n) {
      if (n === null || n === undefined) return "–";
      const u = ["B", "KB", "MB", "GB", "TB"];
      let i = 0, v = Number(n);
      while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
      return (i ? v.toFixed(1) : v) + " " + u[i];
    },
    // times: the API speaks ISO 8601 strings or unix seconds
    date(t) {
      if (t === null || t === undefined || t === "") return null;
      return typeof t === "number" ? new Date(t * 1000) : new Date(t);
    },
    when(t) {
      const d = My.date(t);
      return d ? d.toLocaleString("en-GB", { dateStyle: "medium", timeStyle: "short" }) : "–";
    },
    ago(t) {
      const d = My.date(t);
      if (!d) return "never";
      const s = Math.round((Date.now() - d.getTime()) / 1000);
      if (s < 0) return "in " + My.span(-s);
      return s < 5 ? "just now" : My.span(s) + " ago";
    },
    span(s) {
      if (s < 60) return s + " s";
      if (s < 3600) return Math.round(s / 60) + " min";
      if (s < 86400) return Math.round(s / 3600) + " h";
      return Math.round(s / 86400) + " d";
    },
    isoDay(d) { return d.toISOString().slice(0, 10); },
    daysAgo(n) { return new Date(Date.now() - n * 86400000); },

    // ---------------------------------------------------------------- the URL keeps a page's filters
    query() { return Object.fromEntries(new URLSearchParams(location.search)); },
    setQuery(values) {
      const q = new URLSearchParams();
      for (const [k, v] of Object.entries(values)) if (v !== null && v !== undefined && v !== "") q.set(k, v);
      const s = q.toString();
      history.replaceState(null, "", location.pathname + (s ? "?" + s : ""));
    },

    // ---------------------------------------------------------------- feedback
    toast(message, kind = "ok") {
      const box = document.getElementById("toasts");
      if (!box) return;
      const el = document.createElement("div");
      el.className = "toast " + kind;
      el.textContent = message;
      box.appendChild(el);
      setTimeout(() => el.remove(), kind === "error" ? 8000 : 4000);
    },
    async copy(text, what = "Copied") {
      try {
        await navigator.clipboard.writeText(text);
        My.toast(what + " to the clipboard.");
        return true;
      } catch (_) {
        My.toast("Copy failed: select the text and copy it by hand.", "error");
        return false;
      }
    },
    // a CSV file of rows (objects), downloaded by the browser
    downloadCSV(filename, rows, columns) {
      const cols = columns || (rows.length ? Object.keys(rows[0]) : []);
      const cell = (v) => {
        const s = v === null || v === undefined ? "" : String(v);
        return /[",\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
      };
      const text = [cols.join(",")].concat(rows.map((r) => cols.map((c) => cell(r[c])).join(","))).join("\n") + "\n";
      const a = document.createElement("a");
      a.href = URL.createObjectURL(new Blob([text], { type: "text/csv" }));
      a.download = filename;
      document.body.appendChild(a);
      a.click();
      setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 0);
    },

    // ---------------------------------------------------------------- results: the media and the words in them
    // every image, video and audio in a result: {url, content_type} objects, or bare links to media files
    mediaIn(value, out = [], depth = 0) {
      if (value === null || value === undefined || depth > 8 || out.length >= 24) return out;
      const kindOf = (url, type) => {
        const t = (type || "").split("/")[0];
        if (["image", "video", "audio"].includes(t)) return t;
        try {
          const ext = new URL(url, location.href).pathname.split(".").pop().toLowerCase();
          return MEDIA_EXT[ext] || null;
        } catch (_) { return null; }
      };
      if (typeof value === "string") {
        const kind = /^(https?:\/\/|\/)/.test(value) ? kindOf(value) : null;
        if (kind) out.push({ kind, url: value, type: "", key: value.split("?")[0] + "#" + out.length });
      } else if (Array.isArray(value)) {
        value.forEach((v) => My.mediaIn(v, out, depth + 1));
      } else if (typeof value === "object") {
        const kind = typeof value.url === "string" ? kindOf(value.url, value.content_type) : null;
        if (kind) out.push({ kind, url: value.url, type: value.content_type || "", key: value.url.split("?")[0] + "#" + out.length });
        else Object.values(value).forEach((v) => My.mediaIn(v, out, depth + 1));
      }
      return out;
    },
    // the words of a text result (chat, completion, Responses, transcription), or of an output that is one string
    textOf(r) {
      if (typeof r === "string") return /^(https?:\/\/|\/)/.test(r) ? "" : r;
      if (!r || typeof r !== "object") return "";
      const c = r.choices && r.choices[0];
      if (c && c.message && typeof c.message.content === "string") return c.message.content;
      if (c && typeof c.text === "string") return c.text;
      if (typeof r.output_text === "string") return r.output_text;
      if (typeof r.text === "string") return r.text;
      const values = Object.values(r);
      if (values.length === 1 && typeof values[0] === "string") return My.textOf(values[0]); // {"path": "text"}
      return "";
    },

    // ---------------------------------------------------------------- an OpenAI batch, as the list and the detail show it
    batch: {
      FINAL: ["completed", "failed", "expired", "cancelled"],
      final(b) { return My.batch.FINAL.includes(b.status); },
      label(s) { return s === "in_progress" ? "in progress" : s; },
      badge(s) { return s === "expired" ? "err" : s; },
      done(b) { return b.request_counts.completed + b.request_counts.failed; },
      pct(b, part) {
        const t = b.request_counts.total;
        return t ? Math.round((b.request_counts[part] / t) * 1000) / 10 : 0;
      },
    },

    // ---------------------------------------------------------------- charts (uPlot)
    // series: [{label, values, color?}], x: unix seconds (or numbers) shared by all series
    chart(el, x, series, opts = {}) {
      if (!el || typeof uPlot === "undefined") return null;
      if (el._plot) { el._plot.destroy(); el._plot = null; }
      el.innerHTML = "";
      const palette = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];
      const width = Math.max(260, el.clientWidth || 600);
      const plot = new uPlot({
        width, height: opts.height || 220,
        // bars get half a step of room at each end, so the first and last days are whole
        scales: { x: { time: opts.time !== false, range: opts.bars && x.length ? (u, lo, hi) => {
          const step = x.length > 1 ? x[1] - x[0] : 86400;
          return [lo - step / 2, hi + step / 2];
        } : undefined } },
        // a label the format makes twice (small counts on fractional ticks) is shown once
        axes: [{ stroke: "#475569" }, { stroke: "#475569", size: 72, values: opts.format ? (u, v) => {
          const labels = v.map(opts.format);
          return labels.map((s, i) => (i > 0 && s === labels[i - 1] ? "" : s));
        } : undefined }],
        series: [{}].concat(series.map((s, i) => ({
          label: s.label, stroke: s.color || palette[i % palette.length], width: 2,
          fill: series.length === 1 ? (s.color || palette[0]) + "22" : undefined,
          value: opts.format ? (u, v) => (v === null ? "–" : opts.format(v)) : undefined,
          paths: opts.bars ? uPlot.paths.bars({ size: [0.6, 40] }) : undefined,
        }))),
        legend: { show: series.length > 1 || !!opts.legend },
      }, [x].concat(series.map((s) => s.values)), el);
      el._plot = plot;
      if (!el._resize) {
        el._resize = new ResizeObserver(() => { if (el._plot) el._plot.setSize({ width: Math.max(260, el.clientWidth), height: opts.height || 220 }); });
        el._resize.observe(el);
      }
      return plot;
    },
  };
  window.My = My;

  document.addEventListener("alpine:init", () => {
    // the header: the menu on narrow screens, the organization switch, sign-out
    Alpine.data("shell", () => ({
      open: false,
      async switchOrg(org) {
        try {
          await My.api("/api/auth/session/organization", { body: { organization: org } });
          location.reload();
        } catch (e) { My.toast(e.message, "error"); }
      },
      async signOut() {
        try { await My.api("/api/auth/logout", { method: "POST" }); } catch (_) { /* gone already */ }
        location.href = "/login";
      },
    }));
  });
})();
