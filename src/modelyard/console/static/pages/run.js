"use strict";
// /runs/{run_id}: one agent run. The graph is laid out in columns by depth and kept current by the run's event
// stream (EventSource on /api/runs/{id}/events, with the session cookie); the full run (timings, cost) is read again
// when a node ends. Cancel, retry (a repair run) and run again.
document.addEventListener("alpine:init", () => {
  const RUN_FINAL = ["succeeded", "failed", "cancelled"];
  const NODE_FINAL = ["succeeded", "cached", "failed", "skipped", "cancelled"];
  const W = 184, H = 70, GX = 64, GY = 18, PAD = 16;

  // columns by depth: a node sits one column right of the deepest node it depends on
  function layoutOf(nodes) {
    const ids = Object.keys(nodes);
    const depth = {};
    const visit = (id, seen) => {
      if (depth[id] !== undefined) return depth[id];
      if (seen.has(id)) return 0;  // never for a saved agent (cycles are refused); no endless loop either way
      seen.add(id);
      const deps = (nodes[id].depends_on || []).filter((d) => nodes[d]);
      depth[id] = deps.length ? 1 + Math.max(...deps.map((d) => visit(d, seen))) : 0;
      return depth[id];
    };
    ids.forEach((id) => visit(id, new Set()));
    const cols = [];
    ids.forEach((id) => { (cols[depth[id]] = cols[depth[id]] || []).push(id); });
    const rows = Math.max(1, ...cols.map((c) => c.length));
    const out = [];
    cols.forEach((col, ci) => {
      const offset = ((rows - col.length) * (H + GY)) / 2;
      col.forEach((id, ri) => out.push({ id, x: PAD + ci * (W + GX), y: PAD + offset + ri * (H + GY) }));
    });
    return { nodes: out, w: W, h: H, width: PAD * 2 + cols.length * W + Math.max(0, cols.length - 1) * GX,
      height: PAD * 2 + rows * H + (rows - 1) * GY };
  }

  Alpine.data("runPage", () => ({
    id: My.params.run_id, run: null, layout: { nodes: [], w: W, h: H, width: 0, height: 0 }, agentName: "",
    selected: null, items: [], itemsNext: null, nodeMedia: [], nodeText: "", outputMedia: [],
    error: "", busy: false, es: null, streaming: "connecting", events: 0, refreshTimer: null, itemsTimer: null,

    init() {
      this.connect();
      window.addEventListener("pagehide", () => this.closeStream());
    },

    // ------------------------------------------------------------ the event stream
    connect() {
      this.closeStream();
      const es = new EventSource("/api/runs/" + encodeURIComponent(this.id) + "/events");
      this.es = es;
      this.streaming = "connecting";
      const on = (type, fn) => es.addEventListener(type, (ev) => {
        this.events++;
        this.streaming = "live";
        try { fn(JSON.parse(ev.data)); } catch (e) { My.toast("A run event could not be read: " + e.message, "error"); }
      });
      on("snapshot", (run) => {
        this.setRun(run);
        if (RUN_FINAL.includes(run.status)) this.closeStream("ended");
      });
      on("run.started", () => { if (this.run) this.run.status = "running"; });
      const states = { "node.queued": "queued", "node.started": "running", "node.retrying": "retrying",
        "node.succeeded": "succeeded", "node.failed": "failed", "node.skipped": "skipped", "node.cancelled": "cancelled" };
      for (const [type, state] of Object.entries(states)) {
        on(type, (d) => {
          const n = this.run && this.run.nodes[d.node];
          if (!n) return;
          n.state = d.cached ? "cached" : state;
          if (d.attempt !== undefined) n.attempts = d.attempt;
          if ("output" in d) n.result = d.output;
          if ("error" in d) n.error = d.error;
          if (d.node === this.selected) this.showNode();
          if (NODE_FINAL.includes(n.state)) this.refreshSoon();
        });
      }
      on("map.progress", (d) => {
        const n = this.run && this.run.nodes[d.node];
        if (!n) return;
        n.progress = { done: d.done, failed: d.failed, total: d.total };
        if (d.node === this.selected) this.itemsSoon();
      });
      on("run.completed", (d) => {
        if (this.run) Object.assign(this.run, { status: d.status, error: d.error, outputs: d.outputs });
        this.outputMedia = My.mediaIn(d.outputs);
        this.closeStream("ended");
        this.refreshSoon(0);
      });
      es.onerror = () => {
        if (es.readyState === EventSource.CLOSED) {  // refused (gone, signed out): say so, read the run once
          this.streaming = "closed";
          this.refresh();
        } else {
          this.streaming = "reconnecting";  // the browser reconnects with Last-Event-ID by itself
        }
      };
    },
    closeStream(why) {
      if (this.es) { this.es.close(); this.es = null; }
      if (why) this.streaming = why;
    },
    streamText() {
      return { connecting: "connecting…", live: "live: following the run's events", reconnecting: "reconnecting…",
        ended: "ended", closed: "not live" }[this.streaming] || "";
    },

    // ------------------------------------------------------------ the run
    setRun(fresh) {
      const old = this.run;
      if (old) {  // a node that had ended keeps its output as shown (media already playing keep playing)
        for (const [id, n] of Object.entries(fresh.nodes || {})) {
          const was = old.nodes && old.nodes[id];
          if (was && NODE_FINAL.includes(was.state) && was.state === n.state && was.result !== undefined) n.result = was.result;
        }
      }
      const shape = (r) => Object.entries(r.nodes || {}).map(([k, n]) => k + ":" + (n.depends_on || []).join(",")).join(";");
      if (!old || shape(old) !== shape(fresh)) this.layout = layoutOf(fresh.nodes || {});
      this.run = fresh;
      if (!old || !RUN_FINAL.includes(old.status) || !this.outputMedia.length) this.outputMedia = My.mediaIn(fresh.outputs);
      if (!this.agentName) this.loadAgent(fresh.agent_id);
      if (this.selected) this.showNode(); else if (!old) {
        const first = Object.keys(fresh.nodes || {})[0];
        if (first) this.select(first);
      }
    },
    async loadAgent(agentId) {
      this.agentName = agentId;
      try { this.agentName = (await My.api("/api/agents/" + encodeURIComponent(agentId))).agent.name; } catch (_) { /* deleted: its id */ }
    },
    async refresh() {
      try {
        this.setRun((await My.api("/api/runs/" + encodeURIComponent(this.id))).run);
        this.error = "";
      } catch (e) {
        this.error = e.status === 404 ? "No such run in this organization." : e.message;
      }
    },
    refreshSoon(delay = 400) {  // node ends come in bursts: one read for a burst
      if (this.refreshTimer) clearTimeout(this.refreshTimer);
      this.refreshTimer = setTimeout(() => { this.refreshTimer = null; this.refresh(); }, delay);
    },

    // ------------------------------------------------------------ the graph
    nodes() { return this.run ? Object.values(this.run.nodes || {}) : []; },
    state(id) { return this.run && this.run.nodes[id] ? this.run.nodes[id].state : "pending"; },
    stateWord(id) {
      const n = this.run && this.run.nodes[id];
      if (!n) return "";
      if (n.type === "map" && n.progress && n.progress.total !== null && n.state === "running") {
        return `running ${n.progress.done + n.progress.failed}/${n.progress.total}`;
      }
      return n.state;
    },
    subtitle(id) {
      const n = this.run && this.run.nodes[id];
      if (!n) return "";
      return (n.type === "map" ? "map · " : "") + (n.model_id || "") + (n.task ? " · " + n.task : "");
    },
    badge(s) { return s === "cached" ? "succeeded" : s; },
    doneCount() { return this.nodes().filter((n) => ["succeeded", "cached"].includes(n.state)).length; },
    failedCount() { return this.nodes().filter((n) => n.state === "failed").length; },
    took(x) {
      if (!x || !x.started_at) return "–";
      const s = Math.round((x.finished_at || Date.now() / 1000) - x.started_at);
      return s < 1 ? "< 1 s" : My.ms(s * 1000);
    },
    // the edges, drawn into the SVG under the nodes (an edge turns green once the node it leaves has succeeded)
    drawEdges() {
      const svg = this.$refs.edges;
      if (!svg || !this.run) return;
      const at = Object.fromEntries(this.layout.nodes.map((p) => [p.id, p]));
      const NS = "http://www.w3.org/2000/svg";
      svg.replaceChildren();
      const defs = document.createElementNS(NS, "defs");
      for (const [name, color] of [["arrow", "#94a3b8"], ["arrow-done", "#047857"]]) {
        const m = document.createElementNS(NS, "marker");
        for (const [k, v] of Object.entries({ id: name, viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" })) m.setAttribute(k, v);
        const p = document.createElementNS(NS, "path");
        p.setAttribute("d", "M 0 0 L 10 5 L 0 10 z");
        p.setAttribute("fill", color);
        m.appendChild(p);
        defs.appendChild(m);
      }
      svg.appendChild(defs);
      for (const [id, n] of Object.entries(this.run.nodes)) {
        for (const d of n.depends_on || []) {
          const a = at[d], b = at[id];
          if (!a || !b) continue;
          const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x - 2, y2 = b.y + H / 2, mid = (x1 + x2) / 2;
          const done = ["succeeded", "cached"].includes(this.run.nodes[d].state);
          const path = document.createElementNS(NS, "path");
          path.setAttribute("d", `M ${x1} ${y1} C ${mid} ${y1}, ${mid} ${y2}, ${x2} ${y2}`);
          path.setAttribute("class", "edge" + (done ? " done" : ""));
          path.setAttribute("marker-end", `url(#${done ? "arrow-done" : "arrow"})`);
          svg.appendChild(path);
        }
      }
    },

    // ------------------------------------------------------------ one node
    get node() { return this.selected && this.run ? this.run.nodes[this.selected] : null; },
    select(id) {
      if (this.selected !== id) { this.items = []; this.itemsNext = null; }
      this.selected = id;
      this.showNode();
    },
    showNode() {
      const n = this.node;
      if (!n) return;
      this.nodeMedia = My.mediaIn(n.result);
      this.nodeText = My.textOf(n.result);
      if (n.type === "map") this.loadItems(0);
    },
    mapPct() {
      const p = this.node && this.node.progress;
      return p && p.total ? Math.round(((p.done + p.failed) / p.total) * 100) : 0;
    },
    itemsSoon() {
      if (this.itemsTimer) return;
      this.itemsTimer = setTimeout(() => { this.itemsTimer = null; this.loadItems(0); }, 500);
    },
    async loadItems(after) {
      const node = this.selected;
      if (!this.node || this.node.type !== "map") return; // a late timer after another node was chosen
      try {
        const limit = after ? 50 : Math.max(50, this.items.length);
        const page = await My.api(`/api/runs/${encodeURIComponent(this.id)}/nodes/${encodeURIComponent(node)}/items?after=${after}&limit=${Math.min(limit, 100)}`);
        if (node !== this.selected) return;
        const rows = page.data.map((it) => ({ ...it, media: My.mediaIn(it.result), text: My.textOf(it.result) }));
        this.items = after ? this.items.concat(rows) : rows;
        this.itemsNext = page.next_after;
      } catch (e) {
        My.toast(e.message, "error");
      }
    },
    moreItems() { if (this.itemsNext !== null) this.loadItems(this.itemsNext); },
    short(v) {
      if (v === null || v === undefined) return "–";
      const s = typeof v === "string" ? v : JSON.stringify(v);
      return s.length > 120 ? s.slice(0, 117) + "…" : s;
    },

    // ------------------------------------------------------------ actions
    async cancel() {
      this.busy = true;
      try {
        const r = await My.api("/api/runs/" + encodeURIComponent(this.id) + "/cancel", { method: "POST" });
        this.run.status = r.run.status;
        this.$refs.confirm.close();
        My.toast("Cancelling the run.");
      } catch (e) {
        My.toast(e.message, "error");
      } finally {
        this.busy = false;
      }
    },
    async retry(failedOnly) {
      this.busy = true;
      try {
        const r = await My.api("/api/runs/" + encodeURIComponent(this.id) + "/retry", { body: { failed_only: failedOnly } });
        location.href = "/runs/" + encodeURIComponent(r.run.id);
      } catch (e) {
        My.toast(e.message, "error");
        this.busy = false;
      }
    },
  }));
});
