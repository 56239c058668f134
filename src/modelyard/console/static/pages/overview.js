"use strict";
// The overview: the org's last 30 days from the usage series (day rollups), the wallet and its burn rate,
// recent latency percentiles from the request log, and every model's status (polled while the page is visible).
document.addEventListener("alpine:init", () => {
  const DAY = 86400;

  // nearest-rank percentile of numbers (a value that was observed)
  function rank(sorted, q) {
    return sorted.length ? sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] : null;
  }

  Alpine.data("overviewPage", () => ({
    STATES: ["online", "warming", "standby", "offline"],
    admin: My.can("admin:read"),
    start: My.isoDay(My.daysAgo(29)),
    end: My.isoDay(new Date()),
    error: "",
    account: null,
    loaded: false,
    totals: {},
    burn: 0,
    recent: null,
    models: [],
    modelsLoaded: false,
    counts: {},
    timer: null,

    async init() {
      this.loadAccount();
      this.loadModels();
      this.timer = setInterval(() => { if (document.visibilityState === "visible") this.loadModels(); }, 10000);
      if (this.admin) {
        await Promise.all([this.loadUsage(), this.loadRecent()]);
      }
    },
    destroy() { clearInterval(this.timer); },

    fail(e) { this.error = e.message; },

    async loadAccount() {
      try { this.account = await My.api("/api/v1/me"); } catch (e) { this.fail(e); }
    },

    async loadModels() {
      try {
        const body = await My.api("/api/model-status");
        const order = Object.fromEntries(this.STATES.map((s, i) => [s, i]));
        this.models = body.models.slice().sort((a, b) => (order[a.status] - order[b.status]) || a.model_id.localeCompare(b.model_id));
        const counts = {};
        for (const m of this.models) counts[m.status] = (counts[m.status] || 0) + 1;
        this.counts = counts;
      } catch (e) { this.fail(e); }
      this.modelsLoaded = true;
    },

    async loadUsage() {
      let body;
      try {
        body = await My.orgApi(`/usage/series?group_by=day,model&start=${this.start}&end=${this.end}`);
      } catch (e) { this.fail(e); return; }
      // every day of the window, zeros where nothing happened
      const first = Date.parse(this.start + "T00:00:00Z") / 1000;
      const xs = Array.from({ length: 30 }, (_, i) => first + i * DAY);
      const index = Object.fromEntries(xs.map((t, i) => [new Date(t * 1000).toISOString().slice(0, 10), i]));
      const zero = () => xs.map(() => 0);
      const d = { requests: zero(), failed: zero(), input: zero(), output: zero(), spend: zero(), latency: zero() };
      const perModel = {};
      for (const r of body.data) {
        const i = index[r.day];
        if (i === undefined) continue;
        d.requests[i] += r.requests; d.failed[i] += r.failed; d.input[i] += r.input_tokens;
        d.output[i] += r.output_tokens; d.spend[i] += r.price_micros; d.latency[i] += r.latency_ms_total;
        (perModel[r.model_id] = perModel[r.model_id] || zero())[i] += r.requests;
      }
      const t = body.totals;
      this.totals = t;
      const week = Date.parse(My.isoDay(My.daysAgo(6)) + "T00:00:00Z") / 1000;
      this.burn = xs.reduce((s, x, i) => s + (x >= week ? d.spend[i] : 0), 0) / 7;
      this.loaded = true;
      const errRate = xs.map((_, i) => (d.requests[i] ? (100 * d.failed[i]) / d.requests[i] : null));
      const meanLatency = xs.map((_, i) => (d.requests[i] ? d.latency[i] / d.requests[i] : null));
      const top = Object.entries(perModel).sort((a, b) => b[1].reduce((s, v) => s + v, 0) - a[1].reduce((s, v) => s + v, 0)).slice(0, 5);
      await this.$nextTick();
      const bars = { bars: true };
      My.chart(this.$refs.requests, xs, [{ label: "Requests", values: d.requests }, { label: "Failed", values: d.failed, color: "#dc2626" }], { ...bars, format: (v) => My.num(v) });
      // a day without calls has no rate and no mean: a gap, so bars (a line would not show a lone day)
      My.chart(this.$refs.errors, xs, [{ label: "Error rate", values: errRate, color: "#dc2626" }], { ...bars, format: (v) => My.num(v, 1) + " %" });
      My.chart(this.$refs.latency, xs, [{ label: "Mean latency", values: meanLatency, color: "#7c3aed" }], { ...bars, format: (v) => My.ms(v) });
      My.chart(this.$refs.tokens, xs, [{ label: "Input", values: d.input }, { label: "Output", values: d.output, color: "#059669" }], { ...bars, format: (v) => My.num(v) });
      My.chart(this.$refs.spend, xs, [{ label: "Spend", values: d.spend, color: "#d97706" }], { ...bars, format: (v) => My.usd(v) });
      My.chart(this.$refs.models, xs, top.length ? top.map(([m, v]) => ({ label: m, values: v })) : [{ label: "Requests", values: zero() }],
        { format: (v) => My.num(v), legend: true });
    },

    // p50/p95 of the most recent calls in the request log (the rollups keep sums, not percentiles)
    async loadRecent() {
      try {
        const body = await My.orgApi(`/request-log?limit=500&from=${this.start}`);
        const values = body.data.map((r) => r.latency_ms).sort((a, b) => a - b);
        this.recent = values.length ? { n: values.length, p50: rank(values, 0.5), p95: rank(values, 0.95) } : null;
      } catch (e) { this.fail(e); }
    },

    pct(part, whole) { return whole ? My.num((100 * part) / whole, 1) + " %" : "–"; },

    unlimited() { return this.account && this.account.plan === "unlimited"; },
    daysLeft() {
      if (!this.loaded || !this.account) return "…";
      if (this.unlimited()) return "∞";
      if (!this.burn) return "–";
      return My.num(Math.floor(this.account.balance_micros / this.burn));
    },
    daysLeftNote() {
      if (!this.loaded || !this.account) return "";
      if (this.unlimited()) return "the unlimited plan does not pay from its wallet";
      if (!this.burn) return "no spend in the last 7 days";
      return "at the last 7 days' rate";
    },
  }));
});
