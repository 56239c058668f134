"use strict";
// /models: every model the org's plan may call (GET /api/catalog), live: the list is read again every few seconds
// while the page is visible. Operators also see their remote workers (GET /api/workers).
document.addEventListener("alpine:init", () => {
  const EVERY_MS = 3000;

  Alpine.data("modelsPage", () => ({
    models: [], workers: null, loaded: false, error: "", updated: null,
    q: "", type: "", task: "", timer: null,

    init() {
      const q = My.query();
      this.q = q.q || "";
      this.type = q.type || "";
      this.task = q.task || "";
      this.refresh();
      this.timer = setInterval(() => { if (!document.hidden) this.refresh(); }, EVERY_MS);
      document.addEventListener("visibilitychange", () => { if (!document.hidden) this.refresh(); });
    },
    destroy() { clearInterval(this.timer); },

    async refresh() {
      try {
        const got = await My.api("/api/catalog");
        this.models = got.data;
        if (My.can("admin:read")) this.workers = (await My.api("/api/workers")).data;
        this.error = "";
        this.updated = new Date();
      } catch (e) {
        this.error = "Could not read the catalog: " + e.message;
      } finally {
        this.loaded = true;
      }
    },

    filtered() { My.setQuery({ q: this.q, type: this.type, task: this.task }); },
    clear() { this.q = ""; this.type = ""; this.task = ""; this.filtered(); },

    // the API's own filters (GET /api/catalog?type=&task=&q=), applied here so typing needs no round trip
    get shown() {
      const q = this.q.trim().toLowerCase();
      return this.models.filter((m) =>
        (!this.type || m.type === this.type) &&
        (!this.task || m.tasks.includes(this.task)) &&
        (!q || [m.id, ...m.aliases, m.description || ""].some((t) => t.toLowerCase().includes(q))));
    },
    get types() { return [...new Set(this.models.map((m) => m.type))].sort(); },
    get tasks() { return [...new Set(this.models.flatMap((m) => m.tasks))].sort(); },
    count(state) { return this.models.filter((m) => m.status === state).length; },

    href(m) { return "/models/" + m.id.split("/").map(encodeURIComponent).join("/"); },
    tryHref(m) { return Models.tryHref(m); },
    price(m) { return Models.price(m); },
    inFlight(m) { return m.deployments.reduce((n, d) => n + (d.in_flight || 0), 0); },
    get updatedText() { return this.updated ? this.updated.toLocaleTimeString("en-GB") : "–"; },
  }));
});

// What the models pages share: which playground mode tries a model, and its price in words.
window.Models = {
  // task -> playground mode, in the order a model with several is tried
  MODES: [["chat", "chat"], ["text-to-image", "image"], ["speech", "speech"], ["transcription", "transcription"],
          ["embedding", "embeddings"]],
  mode(m) {
    const hit = Models.MODES.find(([task]) => m.tasks.includes(task));
    return hit ? hit[1] : null;
  },
  tryHref(m, mode) {
    const chosen = mode || Models.mode(m);
    return chosen ? `/playground?model=${encodeURIComponent(m.id)}&mode=${chosen}` : null;
  },
  UNITS: { input_per_1m: "1M input tokens", output_per_1m: "1M output tokens", per_image: "image",
           per_video_second: "second of video", per_1k_characters: "1K characters", per_audio_minute: "audio minute",
           per_request: "request" },
  dollars(v) { return My.usd(Math.round(Number(v) * 1e6)); },
  // the catalog's price is in dollars per unit (as /api/pricing shows it); null when the model is free
  priceLines(m) {
    if (m.free || !m.price) return ["Free"];
    return Object.entries(m.price).map(([k, v]) => {
      const unit = Models.UNITS[k] || k;
      if (v && typeof v === "object") {
        return Object.entries(v).map(([size, p]) => `${Models.dollars(p)} / ${unit} (${size})`).join(", ");
      }
      return `${Models.dollars(v)} / ${unit}`;
    });
  },
  price(m) { return Models.priceLines(m).join(" · "); },
};
