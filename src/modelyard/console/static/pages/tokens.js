"use strict";
// API tokens: the org's (an admin) or one's own (a member); create by scope group, the secret shown once; revoke.
document.addEventListener("alpine:init", () => {
  // Scopes expand (admin:write holds user:*, write holds read); worker grants nothing else.
  const GROUPS = [
    { id: "user", label: "User Access", scopes: ["user:read", "user:write"],
      about: "Call the models: chat, images, speech, jobs, files. What programs usually need." },
    { id: "admin", label: "Admin", scopes: ["admin:read", "admin:write"],
      about: "Manage the organization through the API: tokens, members, usage, wallet, policies (includes User Access)." },
    { id: "worker", label: "Worker", scopes: ["worker"],
      about: "For modelyard worker processes that register with this server. Grants nothing else." },
  ];

  Alpine.data("tokensPage", () => ({
    groups: GROUPS, tokens: [], loading: true, busy: false, error: "",
    name: "", days: "", chosen: ["user"], created: null, target: null, makers: {},
    get admin() { return My.can("admin:read"); },
    get orgName() { return (My.me.organization || {}).name || "this organization"; },

    async init() {
      await this.load();
      if (this.admin) {
        try {  // who made each token, by name
          const members = await My.orgApi("/members");
          for (const m of members.data) this.makers["user:" + m.user_id] = m.email;
        } catch (_) { /* the table shows ids then */ }
      }
    },
    async load() {
      try {
        this.tokens = (await My.orgApi("/tokens")).data.slice().reverse();  // newest first
      } catch (e) {
        My.toast(e.message, "error");
      } finally {
        this.loading = false;
      }
    },

    // a person grants only what they hold; the operator may grant any scope (worker tokens are theirs to make)
    grantable(g) { return (My.operator && My.can("admin:write")) || g.scopes.every((s) => My.can(s)); },
    whyNot(g) {
      const missing = g.scopes.filter((s) => !My.can(s));
      const role = (My.me.organization || {}).role;
      if (g.id === "worker") return "Only the operator creates worker tokens.";
      return `Your role${role ? " (" + role + ")" : ""} does not hold ${missing.join(", ")}, so it cannot grant them.`;
    },
    state(t) {
      if (t.status !== "active") return t.status;
      return t.expires_at && My.date(t.expires_at) <= new Date() ? "expired" : "active";
    },
    maker(t) {
      if (!t.created_by) return "CLI or setup";
      if (t.created_by === My.me.token_id || (My.me.user && t.created_by === "user:" + My.me.user.id)) return "you";
      return this.makers[t.created_by] || t.created_by;
    },

    async create() {
      this.error = "";
      const scopes = [];
      for (const g of GROUPS) if (this.chosen.includes(g.id)) scopes.push(...g.scopes);
      const body = { name: this.name.trim() || "key", scopes };
      if (String(this.days).trim() !== "") body.expires_in_days = Number(this.days);
      this.busy = true;
      try {
        const made = await My.orgApi("/tokens", { body });
        this.created = { secret: made.secret, token: made.token };
        this.name = "";
        this.days = "";
        await this.load();
        this.$nextTick(() => { const el = this.$root.querySelector("[aria-label='Your new token']"); if (el) el.scrollIntoView({ block: "nearest" }); });
      } catch (e) {
        this.error = e.message;
      } finally {
        this.busy = false;
      }
    },

    ask(t) {
      this.target = t;
      this.$refs.confirm.showModal();
    },
    async revoke() {
      if (!this.target) return;
      this.busy = true;
      try {
        await My.orgApi("/tokens/" + encodeURIComponent(this.target.id), { method: "DELETE" });
        My.toast(`Revoked “${this.target.name}”.`);
        this.$refs.confirm.close();
        await this.load();
      } catch (e) {
        My.toast(e.message, "error");
      } finally {
        this.busy = false;
      }
    },
  }));
});
