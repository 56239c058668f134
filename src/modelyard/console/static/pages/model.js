"use strict";
// /models/{id}: one model's catalog entry (GET /api/catalog/{model}): what it is, its parameters per task (the schema
// its routes validate with), the latency this server measured, its deployments (live) and its price.
document.addEventListener("alpine:init", () => {
  const EVERY_MS = 3000;
  // task -> playground mode
  const MODES = { "chat": "chat", "text-to-image": "image", "speech": "speech", "transcription": "transcription",
                  "embedding": "embeddings" };
  const UNITS = { input_per_1m: "1M input tokens", output_per_1m: "1M output tokens", per_image: "image",
                  per_video_second: "second of video", per_1k_characters: "1K characters",
                  per_audio_minute: "audio minute", per_request: "request" };
  const dollars = (v) => My.usd(Math.round(Number(v) * 1e6));
  const BOUNDS = [["minimum", "≥"], ["exclusive_minimum", ">"], ["maximum", "≤"], ["exclusive_maximum", "<"],
                  ["min_length", "length ≥"], ["max_length", "length ≤"], ["min_items", "items ≥"],
                  ["max_items", "items ≤"]];

  Alpine.data("modelPage", () => ({
    id: My.params.model_id, m: null, error: "", missing: false, task: null, timer: null, updated: null,

    init() {
      this.load();
      this.timer = setInterval(() => { if (!document.hidden && !this.missing) this.load(); }, EVERY_MS);
    },
    destroy() { clearInterval(this.timer); },

    async load() {
      try {
        this.m = await My.api("/api/catalog/" + this.id.split("/").map(encodeURIComponent).join("/"));
        if (!this.task || !this.m.tasks.includes(this.task)) this.task = this.m.tasks[0] || null;
        document.title = this.m.id + " · Modelyard";
        this.error = "";
        this.updated = new Date();
      } catch (e) {
        this.missing = e.status === 404;
        this.error = e.message;
      }
    },

    get tries() {
      return this.m ? this.m.tasks.filter((t) => MODES[t]).map((t) => ({
        task: t, href: `/playground?model=${encodeURIComponent(this.m.id)}&mode=${MODES[t]}` })) : [];
    },
    get priceLines() {
      const m = this.m;
      if (!m) return [];
      if (m.free || !m.price) return ["Free"];
      return Object.entries(m.price).map(([k, v]) => {
        const unit = UNITS[k] || k;
        if (v && typeof v === "object") return Object.entries(v).map(([s, p]) => `${dollars(p)} / ${unit} (${s})`).join(", ");
        return `${dollars(v)} / ${unit}`;
      });
    },
    get params() { return this.m && this.task ? this.m.parameters[this.task] : null; },
    get described() { return (this.params || []).some((p) => p.description); },
    get latencyRows() {
      if (!this.m) return [];
      return this.m.tasks.map((t) => ({ task: t, p: this.m.latency[t] }));
    },

    // one parameter in words
    typeOf(p) {
      const t = Array.isArray(p.type) ? p.type.join(" | ") : p.type;
      const items = p.items && p.items.type ? ` of ${Array.isArray(p.items.type) ? p.items.type.join(" | ") : p.items.type}` : "";
      return t + items + (p.nullable ? " | null" : "");
    },
    constraints(p) {
      const out = [];
      if (p.enum) out.push("one of " + p.enum.map((v) => JSON.stringify(v)).join(", "));
      for (const [k, word] of BOUNDS) if (p[k] !== undefined) out.push(`${word} ${p[k]}`);
      if (p.sides) out.push(`sides ${p.sides.min}–${p.sides.max}` + (p.sides.multiple_of ? `, multiples of ${p.sides.multiple_of}` : ""));
      else if (p.pattern) out.push("pattern " + p.pattern);
      if (p.format) out.push("format " + p.format);
      return out.join("; ");
    },
    defaultOf(p) {
      if (p.required) return "required";
      return p.default === null || p.default === undefined ? "–" : JSON.stringify(p.default);
    },
    // nested fields (a chat message's role, content, ...) as short lines
    nested(p) {
      const fields = (p.items && p.items.fields) || p.fields || [];
      return fields.map((f) => `${f.name}: ${this.typeOf(f)}${f.required ? " (required)" : ""}${f.enum ? " — " + f.enum.join(", ") : ""}`);
    },
    ms(v) { return v === null || v === undefined ? "–" : My.ms(v); },
    get updatedText() { return this.updated ? this.updated.toLocaleTimeString("en-GB") : "–"; },
  }));
});
