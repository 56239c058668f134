"use strict";
// /library: the organization's media (GET /api/library/items; `q` searches the prompt, model and task, `type`
// filters; both kept in the URL), share links (create: shown once; revoke) and deletion.
document.addEventListener("alpine:init", () => {
  Alpine.data("libraryPage", () => ({
    q: "", type: "", items: [], hasMore: false, lastId: null, loaded: false, error: "",
    sel: null, share: undefined, link: null, expires: "", busy: false, confirming: null,

    init() {
      const query = My.query();
      this.q = query.q || "";
      this.type = ["image", "video", "audio"].includes(query.type) ? query.type : "";
      this.load(false);
    },
    search() { this.load(false); },
    more() { this.load(true); },
    async load(append) {
      My.setQuery({ q: this.q.trim(), type: this.type });
      try {
        const params = new URLSearchParams({ limit: "24" });
        if (this.q.trim()) params.set("q", this.q.trim());
        if (this.type) params.set("type", this.type);
        if (append && this.lastId) params.set("after", this.lastId);
        const page = await My.api("/api/library/items?" + params);
        this.items = append ? this.items.concat(page.data) : page.data;
        this.hasMore = page.has_more;
        this.lastId = page.last_id;
        this.error = "";
      } catch (e) {
        this.error = e.message;
      }
      this.loaded = true;
    },
    size(it) {
      const parts = [];
      if (it.width && it.height) parts.push(`${it.width}×${it.height}`);
      if (it.duration_seconds) parts.push(`${My.num(it.duration_seconds, 1)} s`);
      parts.push(My.bytes(it.bytes));
      return parts.join(" · ");
    },
    path(it) { return "/api/library/items/" + encodeURIComponent(it.id); },

    // ------------------------------------------------------------ one item
    async open(it) {
      this.sel = it;
      this.share = undefined;
      this.link = null;
      this.expires = "";
      this.$refs.item.showModal();
      try {
        this.share = await My.api(this.path(it) + "/share");
      } catch (e) {
        if (e.status === 404) this.share = null;
        else { this.share = null; My.toast(e.message, "error"); }
      }
    },
    closed() { this.link = null; },
    shareText() {
      const s = this.share;
      if (!s) return "Not shared.";
      return "A share link is live since " + My.when(s.created_at) +
        (s.expires_at ? ", until " + My.when(s.expires_at) : ", until revoked") +
        ". Its address was shown once, when it was made; replace it to get a new one.";
    },
    async createShare() {
      this.busy = true;
      try {
        const body = this.expires ? { expires_in_seconds: Number(this.expires) } : {};
        const made = await My.api(this.path(this.sel) + "/share", { body });
        this.link = made;
        this.share = { created_at: made.created_at, expires_at: made.expires_at };
      } catch (e) {
        My.toast(e.message, "error");
      } finally {
        this.busy = false;
      }
    },
    ask(what) {
      this.confirming = what;
      this.$refs.confirm.showModal();
    },
    async confirmed() {
      this.busy = true;
      try {
        if (this.confirming === "revoke") {
          await My.api(this.path(this.sel) + "/share", { method: "DELETE" });
          this.share = null;
          this.link = null;
          My.toast("Share link revoked.");
        } else {
          await My.api(this.path(this.sel), { method: "DELETE" });
          const gone = this.sel.id;
          this.items = this.items.filter((x) => x.id !== gone);
          this.$refs.item.close();
          this.sel = null;
          My.toast("Item deleted.");
        }
        this.$refs.confirm.close();
      } catch (e) {
        My.toast(e.message, "error");
      } finally {
        this.busy = false;
      }
    },
  }));
});
