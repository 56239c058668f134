"use strict";
// /jobs/{job_id}: one job (GET /api/jobs/{id}): request, status, timings, cost and result; cancel while it can be.
document.addEventListener("alpine:init", () => {
  const FINAL = ["completed", "failed", "cancelled", "dead_letter"];

  Alpine.data("jobPage", () => ({
    id: My.params.job_id, job: null, media: [], text: "", error: "", busy: false, timer: null, settling: 0,

    init() {
      this.load();
      document.addEventListener("visibilitychange", () => { if (!document.hidden) this.load(); });
    },
    get cancellable() { return !!this.job && !FINAL.includes(this.job.status); },
    label(s) { return s === "dead_letter" ? "dead letter" : s; },
    badge(s) { return s === "dead_letter" ? "err" : s; },
    took() {
      const j = this.job;
      if (!j || !j.started_at) return "–";
      const s = Math.round((j.finished_at || Date.now() / 1000) - j.started_at);  // the API keeps whole seconds
      return s < 1 ? "< 1 s" : My.ms(s * 1000);
    },
    waited() {
      const s = Math.round(this.job.started_at - this.job.created_at);
      return s < 1 ? "under a second" : My.ms(s * 1000);
    },
    costNote() {
      const j = this.job;
      if (j.usage) return j.usage.cost_micros ? "charged to the wallet" : (j.status === "completed" ? "free" : "refunded");
      return FINAL.includes(j.status) ? "settling…" : "charged when it ends";
    },
    waitingText() {
      const s = this.job.status;
      if (s === "pending") return "Queued: the result appears here when a runner has done the work.";
      if (s === "running") return "Running…";
      return "No result.";
    },
    otherUnits() {
      const u = (this.job.usage && this.job.usage.units) || {};
      return Object.entries(u).filter(([k]) => !["input_tokens", "output_tokens"].includes(k));
    },
    async load() {
      if (this.timer) { clearTimeout(this.timer); this.timer = null; }
      try {
        const fresh = await My.api("/api/jobs/" + encodeURIComponent(this.id));
        // a finished job's result does not change: keep the media already on the page (playing audio keeps playing)
        if (!(this.job && FINAL.includes(this.job.status) && this.job.status === fresh.status)) {
          this.media = My.mediaIn(fresh.result);
          this.text = My.textOf(fresh.result);
        }
        this.job = fresh;
        this.error = "";
      } catch (e) {
        this.error = e.status === 404 ? "No such job in this organization." : e.message;
        return;
      }
      // poll every 2 s until it ends, then a few times more until its cost has settled
      const waiting = !FINAL.includes(this.job.status) || (!this.job.usage && this.settling++ < 5);
      if (waiting && !document.hidden) this.timer = setTimeout(() => this.load(), 2000);
    },
    unit(k) { const w = k.replace(/_/g, " "); return w.charAt(0).toUpperCase() + w.slice(1); },
    async cancel() {
      this.busy = true;
      try {
        const r = await My.api("/api/jobs/" + encodeURIComponent(this.id) + "/cancel", { method: "POST" });
        My.toast(r.cancel === "requested" ? "Cancel requested: the runner stops at its next heartbeat." :
          r.cancel === "final" ? "The job had already ended." : "Job cancelled.");
        this.$refs.confirm.close();
        this.settling = 0;
        await this.load();
      } catch (e) {
        My.toast(e.message, "error");
      } finally {
        this.busy = false;
      }
    },
  }));
});
