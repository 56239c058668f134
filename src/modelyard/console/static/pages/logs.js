"use strict";
// The request log: GET /api/organizations/{org}/request-log, newest first, filtered by model, status and dates
// (kept in the URL), paged with the API's `after` cursor; key names from /tokens.
document.addEventListener("alpine:init", () => {
  const STATUSES = [
    { id: "ok", label: "ok" }, { id: "failed", label: "failed" },
    { id: "429", label: "429 rate limited" }, { id: "499", label: "499 client left" },
    { id: "500", label: "500" }, { id: "502", label: "502" }, { id: "503", label: "503" }, { id: "504", label: "504" },
  ];
  const validDay = (s) => /^\d{4}-\d{2}-\d{2}$/.test(s || "") && !Number.isNaN(Date.parse(s));
  const nextDay = (s) => new Date(Date.parse(s + "T00:00:00Z") + 86400000).toISOString().slice(0, 10);

  Alpine.data("logsPage", () => ({
    f: { model: "", status: "", from: "", to: "" },
    limit: 50,
    rows: [],
    more: false,
    cursor: null,
    loaded: false,
    busy: false,
    error: "",
    names: {},
    modelOptions: [],
    statusOptions: STATUSES.slice(),
    seq: 0,

    async init() {
      const q = My.query();
      this.f.model = q.model || "";
      this.f.status = q.status || "";
      this.f.from = validDay(q.from) ? q.from : "";
      this.f.to = validDay(q.to) ? q.to : "";
      const n = Number(q.limit);
      if (Number.isInteger(n) && n >= 1 && n <= 500) this.limit = n;
      if (this.f.status && !STATUSES.some((s) => s.id === this.f.status)) this.statusOptions.push({ id: this.f.status, label: this.f.status });
      this.loadChoices();
      await this.load(false);
    },

    filtered() { return !!(this.f.model || this.f.status || this.f.from || this.f.to); },
    keyName(id) { return id ? (this.names[id] || id) : "no key"; },

    apply() {
      My.setQuery({ ...this.f, limit: this.limit === 50 ? "" : this.limit });
      this.load(false);
    },
    clear() {
      this.f = { model: "", status: "", from: "", to: "" };
      this.apply();
    },
    reload() { return this.load(false); },
    loadMore() { return this.load(true); },

    async loadChoices() {
      try {
        const [tokens, status] = await Promise.all([My.orgApi("/tokens"), My.api("/api/model-status")]);
        this.names = Object.fromEntries(tokens.data.map((t) => [t.id, t.name]));
        const models = new Set(status.models.map((m) => m.model_id));
        if (this.f.model) models.add(this.f.model);
        this.modelOptions = [...models].sort();
      } catch (e) { this.error = e.message; }
    },

    async load(append) {
      const params = new URLSearchParams({ limit: String(this.limit) });
      if (this.f.model) params.set("model", this.f.model);
      if (this.f.status) params.set("status", this.f.status);
      if (this.f.from) params.set("from", this.f.from);
      if (this.f.to) params.set("to", nextDay(this.f.to)); // the API's `to` is exclusive
      if (append && this.cursor) params.set("after", this.cursor);
      const seq = ++this.seq;
      this.busy = true;
      try {
        const body = await My.orgApi("/request-log?" + params);
        if (seq !== this.seq) return; // a newer filter's answer is on its way
        this.rows = append ? this.rows.concat(body.data) : body.data;
        this.more = body.has_more;
        this.cursor = body.next_after;
        this.error = "";
      } catch (e) {
        if (seq !== this.seq) return;
        this.error = e.message;
        if (!append) { this.rows = []; this.more = false; }
      } finally {
        if (seq === this.seq) { this.busy = false; this.loaded = true; }
      }
    },

    open(r, event) {
      if (!r.request_id || event.target.closest("a, button")) return;
      location.href = "/logs/" + encodeURIComponent(r.request_id);
    },
  }));
});
