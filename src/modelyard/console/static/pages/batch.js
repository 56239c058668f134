"use strict";
// /batches/{batch_id}: one batch (GET /v1/batches/{id}): counts, timeline, its files; cancel while it runs.
document.addEventListener("alpine:init", () => {
  // the detail's own words for the counts; the rest of a batch's reading is My.batch
  const view = Object.assign({}, My.batch, {
    counts(b) {
      const c = b.request_counts;
      if (!c.total) return b.status === "validating" ? "Validating the input file…" : "No requests.";
      return `${My.batch.done(b)} of ${c.total} requests done` + (c.failed ? ` (${c.failed} failed)` : "") + ".";
    },
  });
  const TIMES = [["Created", "created_at"], ["Started", "in_progress_at"], ["Finalizing", "finalizing_at"],
    ["Completed", "completed_at"], ["Failed", "failed_at"], ["Cancelling", "cancelling_at"],
    ["Cancelled", "cancelled_at"], ["Expired", "expired_at"], ["Expires", "expires_at"]];

  Alpine.data("batchPage", () => ({
    id: My.params.batch_id, batch: null, error: "", busy: false, timer: null, view,

    init() {
      this.load();
      document.addEventListener("visibilitychange", () => { if (!document.hidden) this.load(); });
    },
    get cancellable() { return !!this.batch && !view.final(this.batch) && this.batch.status !== "cancelling"; },
    timeline() {
      const b = this.batch;
      return TIMES.filter(([, k]) => b[k]).filter(([n]) => n !== "Expires" || !view.final(b)).map(([n, k]) => [n, b[k]]);
    },
    fileUrl(id) { return "/v1/files/" + encodeURIComponent(id) + "/content"; },
    async load() {
      if (this.timer) { clearTimeout(this.timer); this.timer = null; }
      try {
        this.batch = await My.api("/v1/batches/" + encodeURIComponent(this.id));
        this.error = "";
      } catch (e) {
        this.error = e.status === 404 ? "No such batch in this organization." : e.message;
        return;
      }
      if (!view.final(this.batch) && !document.hidden) this.timer = setTimeout(() => this.load(), 2000);
    },
    async cancel() {
      this.busy = true;
      try {
        this.batch = await My.api("/v1/batches/" + encodeURIComponent(this.id) + "/cancel", { method: "POST" });
        My.toast("Cancelling the batch.");
        this.$refs.confirm.close();
        this.load();
      } catch (e) {
        My.toast(e.message, "error");
      } finally {
        this.busy = false;
      }
    },
  }));
});
