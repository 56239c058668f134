// /workflows: the organization's agents (GET /api/agents), the last run of each (GET /api/runs?agent_id=&limit=1),
// run one (POST /api/agents/{id}/run, its inputs from POST /api/agents/validate) and delete one (DELETE).
"use strict";

// An input value as typed: JSON when it looks like JSON (an array, an object, a number, true/false/null), else text.
function wfInputValue(text) {
  const t = (text || "").trim();
  if (/^[[{]/.test(t) || /^-?\d+(\.\d+)?([eE][+-]?\d+)?$/.test(t) || /^(true|false|null)$/.test(t)) {
    try { return JSON.parse(t); } catch (_) { /* text after all */ }
  }
  return text || "";
}

document.addEventListener("alpine:init", () => {
  const FINAL = ["succeeded", "failed", "cancelled"];

  Alpine.data("workflowsPage", () => ({
    agents: [], loading: true, hasMore: false, lastId: null, error: "", busy: false,
    deleting: null, running: null, runInputs: [], runValues: {}, runError: "", started: null, poll: null,

    init() {
      this.load(false);
      document.addEventListener("visibilitychange", () => { if (document.hidden) this.stopPoll(); });
    },

    nodeCount(a) {
      const n = a.dag && a.dag.nodes;
      return Array.isArray(n) ? n.length : Object.keys(n || {}).length;
    },

    async load(more) {
      this.loading = true;
      this.error = "";
      try {
        const q = new URLSearchParams({ limit: "50" });
        if (more && this.lastId) q.set("after", this.lastId);
        const page = await My.api("/api/agents?" + q);
        const rows = page.data.map((a) => Object.assign(a, { last_run: undefined }));
        this.agents = more ? this.agents.concat(rows) : rows;
        this.hasMore = page.has_more;
        this.lastId = page.last_id;
        await Promise.all(rows.map((a) => this.lastRun(a)));
      } catch (e) {
        this.error = e.message;
      } finally {
        this.loading = false;
      }
    },

    async lastRun(a) {
      try {
        const runs = await My.api("/api/runs?" + new URLSearchParams({ agent_id: a.id, limit: "1" }));
        const row = this.agents.find((x) => x.id === a.id);
        if (row) row.last_run = runs.data[0] || null;
      } catch (_) { /* the list still shows */ }
    },

    askDelete(a) {
      this.deleting = a;
      this.$refs.deleteDialog.showModal();
    },

    async confirmDelete() {
      const a = this.deleting;
      this.busy = true;
      try {
        await My.api("/api/agents/" + encodeURIComponent(a.id), { method: "DELETE" });
        this.agents = this.agents.filter((x) => x.id !== a.id);
        this.$refs.deleteDialog.close();
        My.toast(`Deleted “${a.name}”.`);
      } catch (e) {
        My.toast(e.message, "error");
      } finally {
        this.busy = false;
      }
    },

    async askRun(a) {
      this.runError = "";
      this.running = a;
      try {
        const v = await My.api("/api/agents/validate", { body: { dag: a.dag } });
        this.runInputs = v.inputs;
      } catch (e) {
        // a saved agent that no longer validates (a model gone): running it would say the same
        this.runInputs = [];
        this.runError = e.message;
      }
      this.runValues = Object.fromEntries(this.runInputs.map((n) => [n, ""]));
      this.$refs.runDialog.showModal();
    },

    async confirmRun() {
      const a = this.running;
      this.busy = true;
      this.runError = "";
      try {
        const input_params = Object.fromEntries(this.runInputs.map((n) => [n, wfInputValue(this.runValues[n])]));
        const r = await My.api(`/api/agents/${encodeURIComponent(a.id)}/run`, { body: { input_params } });
        this.$refs.runDialog.close();
        this.started = { id: r.run.id, name: a.name };
        const row = this.agents.find((x) => x.id === a.id);
        if (row) row.last_run = r.run;
        this.watch(a.id, r.run.id);
      } catch (e) {
        this.runError = e.message;
      } finally {
        this.busy = false;
      }
    },

    // the started run's status in its row, every 2 s until it ends (or the page is hidden)
    watch(agentId, runId) {
      this.stopPoll();
      this.poll = setInterval(async () => {
        try {
          const r = await My.api("/api/runs/" + encodeURIComponent(runId));
          const row = this.agents.find((x) => x.id === agentId);
          if (row) row.last_run = r.run;
          if (FINAL.includes(r.run.status)) this.stopPoll();
        } catch (_) { this.stopPoll(); }
      }, 2000);
    },
    stopPoll() {
      if (this.poll) clearInterval(this.poll);
      this.poll = null;
    },
  }));
});
