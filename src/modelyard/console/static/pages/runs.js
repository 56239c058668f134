"use strict";
// /runs: the organization's agent runs (GET /api/runs), filtered by status and agent (kept in the URL), polled
// while any on the page is still going.
document.addEventListener("alpine:init", () => {
  const FINAL = ["succeeded", "failed", "cancelled"];
  Alpine.data("runsPage", () => ({
    statuses: ["pending", "running", "succeeded", "failed", "cancelling", "cancelled"],
    status: "", agent: "", after: "", agents: [], names: {}, runs: [], hasMore: false, loaded: false, error: "",
    live: false, timer: null,

    init() {
      const q = My.query();
      this.status = this.statuses.includes(q.status) ? q.status : "";
      this.agent = q.agent_id || "";
      this.after = q.after || "";
      this.loadAgents();
      this.load();
      document.addEventListener("visibilitychange", () => { if (!document.hidden) this.load(); else this.stop(); });
    },
    // agent names for the table and the filter (the newest hundred; a deleted agent shows by its id)
    async loadAgents() {
      try {
        const page = await My.api("/api/agents?limit=100");
        this.agents = page.data;
        this.names = Object.fromEntries(page.data.map((a) => [a.id, a.name]));
      } catch (e) { /* the runs still list, by agent id */ }
    },
    agentName(id) { return this.names[id] || id; },
    took(r) {
      if (!r.started_at) return "–";
      const s = Math.round((r.finished_at || Date.now() / 1000) - r.started_at);
      return s < 1 ? "< 1 s" : My.ms(s * 1000);
    },
    async load() {
      My.setQuery({ status: this.status, agent_id: this.agent, after: this.after });
      try {
        const q = new URLSearchParams({ limit: "25" });
        if (this.status) q.set("status", this.status);
        if (this.agent) q.set("agent_id", this.agent);
        if (this.after) q.set("after", this.after);
        const page = await My.api("/api/runs?" + q);
        this.runs = page.data;
        this.hasMore = page.has_more;
        this.error = "";
      } catch (e) {
        this.error = e.message;
      }
      this.loaded = true;
      this.stop();
      this.live = this.runs.some((r) => !FINAL.includes(r.status));
      if (this.live && !document.hidden) this.timer = setTimeout(() => this.load(), 2000);
    },
    stop() { if (this.timer) { clearTimeout(this.timer); this.timer = null; } },
    first() { this.after = ""; this.load(); },
    older() {
      if (!this.runs.length) return;
      this.after = this.runs[this.runs.length - 1].id;
      this.load();
    },
  }));
});
