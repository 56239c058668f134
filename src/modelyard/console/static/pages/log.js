"use strict";
// One request's calls from GET /api/organizations/{org}/request-log/{request_id}, with bodies when the org keeps
// them; the org's request-logging setting (GET /api/organizations/{org}) says why they are missing otherwise.
document.addEventListener("alpine:init", () => {
  Alpine.data("logPage", () => ({
    requestId: My.params.request_id,
    calls: [],
    names: {},
    logging: null,
    loaded: false,
    error: "",

    async init() {
      const [one, tokens, org] = await Promise.allSettled([
        My.orgApi("/request-log/" + encodeURIComponent(this.requestId)),
        My.orgApi("/tokens"),
        My.orgApi(""),
      ]);
      if (one.status === "fulfilled") this.calls = one.value.calls;
      else this.error = one.reason.status === 404 ? `No request '${this.requestId}' in this organization's request log (it may be older than the retention period).` : one.reason.message;
      if (tokens.status === "fulfilled") this.names = Object.fromEntries(tokens.value.data.map((t) => [t.id, t.name]));
      if (org.status === "fulfilled") this.logging = org.value.request_logging;
      this.loaded = true;
    },

    keyName(id) {
      if (!id) return "no key (a signed-in person or a job)";
      return this.names[id] ? `${this.names[id]} (${id})` : id;
    },
    pretty(v) { return v === null || v === undefined ? "–" : JSON.stringify(v, null, 2); },
    noBody() {
      if (this.logging && this.logging.bodies) {
        return "This call's bodies were not kept: it was made before request logging was turned on, or they are past the retention period.";
      }
      return "Prompt and response bodies are not stored: request logging is off for this organization. An owner or admin can turn it on in Settings (Request logging), optionally with PII redaction.";
    },
  }));
});
