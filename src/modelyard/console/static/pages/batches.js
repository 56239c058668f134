"use strict";
// /batches: the organization's batches (GET /v1/batches) with their progress, polled while any is unfinished.
document.addEventListener("alpine:init", () => {
  Alpine.data("batchesPage", () => ({
    batches: [], after: "", hasMore: false, loaded: false, error: "", live: false, timer: null,

    init() {
      this.after = My.query().after || "";
      this.load();
      document.addEventListener("visibilitychange", () => { if (!document.hidden) this.load(); else this.stop(); });
    },
    label: (s) => My.batch.label(s),
    badge: (s) => My.batch.badge(s),
    done: (b) => My.batch.done(b),
    pct: (b, part) => My.batch.pct(b, part),
    counts(b) {  // the list's short words for the counts
      const c = b.request_counts;
      if (!c.total) return b.status === "validating" ? "validating the input…" : "no requests";
      return `${My.batch.done(b)} / ${c.total} done` + (c.failed ? ` · ${c.failed} failed` : "");
    },
    ended(b) {
      const t = b.completed_at || b.failed_at || b.cancelled_at || b.expired_at;
      return t ? My.ago(t) : "–";
    },
    async load() {
      My.setQuery({ after: this.after });
      try {
        const q = new URLSearchParams({ limit: "25" });
        if (this.after) q.set("after", this.after);
        const page = await My.api("/v1/batches?" + q);
        this.batches = page.data;
        this.hasMore = page.has_more;
        this.error = "";
      } catch (e) {
        this.error = e.message;
      }
      this.loaded = true;
      this.stop();
      this.live = this.batches.some((b) => !My.batch.final(b));
      if (this.live && !document.hidden) this.timer = setTimeout(() => this.load(), 2000);
    },
    stop() { if (this.timer) { clearTimeout(this.timer); this.timer = null; } },
    first() { this.after = ""; this.load(); },
    older() {
      if (!this.batches.length) return;
      this.after = this.batches[this.batches.length - 1].id;
      this.load();
    },
  }));
});
