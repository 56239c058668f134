"use strict";
// The usage explorer: a metric × a grouping × a date range (and filters), all kept in the URL, read from
// GET /api/organizations/{org}/usage/series (the day rollups): a chart of the top groups by day, a table, a CSV.
document.addEventListener("alpine:init", () => {
  const DAY = 86400;
  const TOP = 6; // lines in the chart; the table has every group

  const METRICS = [
    { id: "requests", label: "Requests", of: (r) => r.requests, fmt: (v) => My.num(v) },
    { id: "tokens", label: "Tokens (input + output)", of: (r) => r.input_tokens + r.output_tokens, fmt: (v) => My.num(v) },
    { id: "input_tokens", label: "Input tokens", of: (r) => r.input_tokens, fmt: (v) => My.num(v) },
    { id: "output_tokens", label: "Output tokens", of: (r) => r.output_tokens, fmt: (v) => My.num(v) },
    { id: "spend", label: "Spend", of: (r) => r.price_micros, fmt: (v) => My.usd(v) },
    { id: "errors", label: "Errors (failed calls)", of: (r) => r.failed, fmt: (v) => My.num(v) },
    { id: "error_rate", label: "Error rate", of: (r) => (r.requests ? (100 * r.failed) / r.requests : null), fmt: (v) => My.num(v, 1) + " %" },
    { id: "latency", label: "Latency (mean)", of: (r) => (r.requests ? r.latency_ms_total / r.requests : null), fmt: (v) => My.ms(v) },
  ];
  const GROUPS = [
    { id: "day", label: "Day", api: "day" },
    { id: "model", label: "Model", api: "model" },
    { id: "key", label: "Key", api: "token" },
    { id: "task", label: "Task", api: "task" },
    { id: "status", label: "Status", api: "status" },
  ];
  const SUMS = ["requests", "succeeded", "failed", "input_tokens", "output_tokens", "price_micros", "latency_ms_total"];

  function blank() { return Object.fromEntries(SUMS.map((k) => [k, 0])); }
  function add(into, r) { for (const k of SUMS) into[k] += r[k] || 0; return into; }
  function mean(r) { r.latency_ms_mean = r.requests ? r.latency_ms_total / r.requests : null; return r; }
  function dayOf(t) { return new Date(t * 1000).toISOString().slice(0, 10); }
  function validDay(s) { return /^\d{4}-\d{2}-\d{2}$/.test(s || "") && !Number.isNaN(Date.parse(s)); }

  Alpine.data("usagePage", () => ({
    METRICS, GROUPS,
    f: { metric: "requests", group: "day", start: "", end: "", model: "", key: "", task: "", status: "" },
    error: "",
    loaded: false,
    rows: [],
    totals: {},
    tokens: [],
    modelOptions: [],
    taskOptions: [],
    seq: 0,

    async init() {
      const q = My.query();
      const f = this.f;
      if (METRICS.some((m) => m.id === q.metric)) f.metric = q.metric;
      if (GROUPS.some((g) => g.id === q.group)) f.group = q.group;
      f.end = validDay(q.end) ? q.end : My.isoDay(new Date());
      f.start = validDay(q.start) ? q.start : My.isoDay(new Date(Date.parse(f.end) - 29 * DAY * 1000));
      for (const k of ["model", "key", "task", "status"]) f[k] = q[k] || "";
      this.loadChoices();
      await this.load();
    },

    metric() { return METRICS.find((m) => m.id === this.f.metric); },
    group() { return GROUPS.find((g) => g.id === this.f.group); },
    chartTitle() {
      const g = this.f.group === "day" ? "" : ` by ${this.group().label.toLowerCase()} (top ${TOP})`;
      return `${this.metric().label} a day${g}, ${this.f.start} to ${this.f.end}`;
    },
    pct(part, whole) { return whole ? My.num((100 * part) / whole, 1) + " %" : "–"; },

    last(days) {
      this.f.end = My.isoDay(new Date());
      this.f.start = My.isoDay(My.daysAgo(days - 1));
      this.apply();
    },

    apply() {
      if (!validDay(this.f.start) || !validDay(this.f.end)) return;
      My.setQuery(this.f);
      this.load();
    },

    // the filters' choices: keys from /tokens, models and tasks from the model status
    async loadChoices() {
      try {
        const [tokens, status] = await Promise.all([My.orgApi("/tokens"), My.api("/api/model-status")]);
        this.tokens = tokens.data;
        const models = new Set(status.models.map((m) => m.model_id));
        const tasks = new Set(status.models.flatMap((m) => m.tasks));
        if (this.f.model) models.add(this.f.model);
        if (this.f.task) tasks.add(this.f.task);
        this.modelOptions = [...models].sort();
        this.taskOptions = [...tasks].sort();
      } catch (e) { this.error = e.message; }
    },

    async load() {
      const f = this.f;
      const g = this.group();
      const params = new URLSearchParams({ group_by: g.id === "day" ? "day" : "day," + g.api, start: f.start, end: f.end });
      for (const [k, api] of [["model", "model"], ["key", "token"], ["task", "task"], ["status", "status"]]) if (f[k]) params.set(api, f[k]);
      const seq = ++this.seq;
      let body;
      try {
        body = await My.orgApi("/usage/series?" + params);
      } catch (e) {
        if (seq === this.seq) { this.error = e.message; this.loaded = true; this.rows = []; }
        return;
      }
      if (seq !== this.seq) return; // a newer choice is on its way
      this.error = "";
      this.totals = mean(add(blank(), body.totals));
      // the table: one row per group, summed over the days
      const keyOf = (r) => (g.id === "day" ? r.day : g.id === "model" ? r.model_id : g.id === "key" ? (r.token_id || "") : g.id === "task" ? r.task : r.status);
      const labelOf = (r) => (g.id === "key" ? (r.token_name || r.token_id || "no key (signed-in people)") : keyOf(r));
      const groups = new Map();
      for (const r of body.data) {
        const k = keyOf(r);
        if (!groups.has(k)) groups.set(k, { key: k, label: labelOf(r), ...blank() });
        add(groups.get(k), r);
      }
      const m = this.metric();
      const rows = [...groups.values()].map(mean);
      if (g.id === "day") rows.sort((a, b) => a.key.localeCompare(b.key));
      else rows.sort((a, b) => (m.of(b) ?? -1) - (m.of(a) ?? -1) || a.label.localeCompare(b.label));
      this.rows = rows;
      this.loaded = true;
      await this.$nextTick();
      this.draw(body.data, rows, keyOf);
    },

    draw(data, rows, keyOf) {
      const first = Date.parse(this.f.start + "T00:00:00Z") / 1000;
      const last = Date.parse(this.f.end + "T00:00:00Z") / 1000;
      const xs = [];
      for (let t = first; t <= last; t += DAY) xs.push(t);
      const index = Object.fromEntries(xs.map((t, i) => [dayOf(t), i]));
      const m = this.metric();
      const lines = this.f.group === "day" ? [{ key: null, label: m.label }] : rows.slice(0, TOP).map((r) => ({ key: r.key, label: r.label }));
      const cells = lines.map(() => xs.map(() => null));
      lines.forEach((line, j) => {
        for (const r of data) {
          if (line.key !== null && keyOf(r) !== line.key) continue;
          const i = index[r.day];
          if (i === undefined) continue;
          cells[j][i] = add(cells[j][i] || blank(), r);
        }
      });
      // sums a day per line; a day without calls is 0 for counts, a gap for rates and means
      const rate = m.id === "error_rate" || m.id === "latency";
      const series = lines.map((line, j) => ({ label: line.label, values: cells[j].map((c) => (c ? m.of(c) : rate ? null : 0)) }));
      My.chart(this.$refs.chart, xs, series.length ? series : [{ label: m.label, values: xs.map(() => 0) }],
        { format: m.fmt, bars: this.f.group === "day" && !rate, height: 260 });
    },

    exportCSV() {
      const g = this.group();
      const out = this.rows.map((r) => ({
        [g.id]: r.key, ...(g.id === "key" ? { key_name: r.label } : {}),
        requests: r.requests, succeeded: r.succeeded, failed: r.failed, input_tokens: r.input_tokens,
        output_tokens: r.output_tokens, price_micros: r.price_micros, cost_usd: (r.price_micros / 1e6).toFixed(6),
        latency_ms_mean: r.latency_ms_mean === null ? "" : r.latency_ms_mean.toFixed(1),
      }));
      My.downloadCSV(`usage-by-${g.id}-${this.f.start}-to-${this.f.end}.csv`, out);
    },
  }));
});
