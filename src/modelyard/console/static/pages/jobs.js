"use strict";
// /jobs: the organization's jobs (GET /api/jobs), filtered by status (kept in the URL), polled while any is unfinished.
document.addEventListener("alpine:init", () => {
  const FINAL = ["completed", "failed", "cancelled", "dead_letter"];
  Alpine.data("jobsPage", () => ({
    statuses: ["pending", "running", "completed", "failed", "cancelled", "dead_letter"],
    status: "", after: "", cursors: [], jobs: [], hasMore: false, loaded: false, error: "", live: false, timer: null,

    init() {
      const q = My.query();
      this.status = this.statuses.includes(q.status) ? q.status : "";
      this.after = q.after || "";
      this.load();
      document.addEventListener("visibilitychange", () => { if (!document.hidden) this.load(); else this.stop(); });
    },
    label(s) { return s === "dead_letter" ? "dead letter" : s; },
    badge(s) { return s === "dead_letter" ? "err" : s; },
    took(j) {
      if (!j.started_at) return "–";
      const s = Math.round((j.finished_at || Date.now() / 1000) - j.started_at);  // the API keeps whole seconds
      return s < 1 ? "< 1 s" : My.ms(s * 1000);
    },
    async load() {
      My.setQuery({ status: this.status, after: this.after });
      try {
        const q = new URLSearchParams({ limit: "25" });
        if (this.status) q.set("status", this.status);
        if (this.after) q.set("after", this.after);
        const page = await My.api("/api/jobs?" + q);
        this.jobs = page.data;
        this.hasMore = page.has_more;
        this.error = "";
      } catch (e) {
        this.error = e.message;
      }
      this.loaded = true;
      this.schedule();
    },
    // poll every 2 s while a job on the page can still change, and only while the page is visible
    schedule() {
      this.stop();
      this.live = this.jobs.some((j) => !FINAL.includes(j.status));
      if (this.live && !document.hidden) this.timer = setTimeout(() => this.load(), 2000);
    },
    stop() { if (this.timer) { clearTimeout(this.timer); this.timer = null; } },
    first() { this.after = ""; this.cursors = []; this.load(); },
    older() {
      if (!this.jobs.length) return;
      this.cursors.push(this.after);
      this.after = this.jobs[this.jobs.length - 1].id;
      this.load();
    },
  }));
});
