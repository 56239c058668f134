"use strict";
// Settings: one's profile and sessions; for owners and admins the organization (members, invites), billing, the
// content filter policy, the webhook secret and request logging. Each section reads and writes the public API.
document.addEventListener("alpine:init", () => {
  const ALL_TABS = [
    { id: "profile", label: "Profile", needs: null },
    { id: "org", label: "Organization", needs: "admin:read" },
    { id: "billing", label: "Billing", needs: "admin:read" },
    { id: "filter", label: "Content filter", needs: "admin:read" },
    { id: "webhooks", label: "Webhooks", needs: "user:read" },
    { id: "logging", label: "Request logging", needs: "admin:read" },
  ];

  Alpine.data("settingsPage", () => ({
    tab: "profile", busy: false,
    profile: null, form: { username: "", bio: "", location: "" }, profileError: "",
    members: [], inviteEmail: "", inviteRole: "member", inviteLink: null,
    wallet: null, rates: null,
    policy: null, filterForm: { action: "flag", categories: "" },
    webhookSecret: "",
    logging: { bodies: false, redact: false, retention_days: "" }, maxDays: 0,
    confirmText: "", onConfirm: null, loaded: {},

    get tabs() { return ALL_TABS.filter((t) => !t.needs || My.can(t.needs)); },
    get orgName() { return (My.me.organization || {}).name || ""; },

    init() {
      const want = My.query().tab;
      this.show(this.tabs.some((t) => t.id === want) ? want : "profile", false);
    },
    show(id, keep = true) {
      this.tab = id;
      if (keep) My.setQuery({ tab: id === "profile" ? "" : id });
      if (!this.loaded[id]) {
        this.loaded[id] = true;
        const load = { profile: this.loadProfile, org: this.loadMembers, billing: this.loadBilling,
                       filter: this.loadFilter, logging: this.loadLogging }[id];
        if (load) load.call(this);
      }
    },
    fail(e) { My.toast(e.message, "error"); },

    // ---------------------------------------------------------------- profile
    async loadProfile() {
      if (!My.me.user) { this.profile = {}; return; }
      try {
        this.profile = await My.api("/api/v1/me/profile");
        this.form = { username: this.profile.username || "", bio: this.profile.bio || "", location: this.profile.location || "" };
      } catch (e) { this.fail(e); }
    },
    async saveProfile() {
      this.profileError = "";
      this.busy = true;
      try {
        this.profile = await My.api("/api/v1/me/profile", { method: "PATCH", body: this.form });
        My.toast("Profile saved.");
      } catch (e) {
        this.profileError = e.message;
      } finally { this.busy = false; }
    },
    async logoutAll() {
      try {
        await My.api("/api/auth/logout-all", { method: "POST" });
        location.href = "/login";
      } catch (e) { this.fail(e); }
    },

    // ---------------------------------------------------------------- organization
    isMe(m) { return My.me.user && My.me.user.id === m.user_id; },
    async loadMembers() {
      try { this.members = (await My.orgApi("/members")).data; } catch (e) { this.fail(e); }
    },
    async setRole(m, role, select) {
      try {
        await My.orgApi("/members/" + encodeURIComponent(m.user_id), { method: "PATCH", body: { role } });
        m.role = role;
        My.toast(`${m.email} is now ${role}.`);
      } catch (e) {
        select.value = m.role;
        this.fail(e);
      }
    },
    askRemove(m) {
      this.confirmText = `Remove ${m.email} from ${this.orgName}? The tokens they made here are revoked.`;
      this.onConfirm = async () => {
        await My.orgApi("/members/" + encodeURIComponent(m.user_id), { method: "DELETE" });
        My.toast(`Removed ${m.email}.`);
        await this.loadMembers();
      };
      this.$refs.confirm.showModal();
    },
    async confirmed() {
      try { if (this.onConfirm) await this.onConfirm(); } catch (e) { this.fail(e); }
      this.$refs.confirm.close();
    },
    async invite() {
      this.busy = true;
      try {
        const body = { role: this.inviteRole };
        if (this.inviteEmail.trim()) body.email = this.inviteEmail.trim();
        this.inviteLink = await My.orgApi("/invites", { body });
        this.inviteEmail = "";
      } catch (e) { this.fail(e); } finally { this.busy = false; }
    },

    // ---------------------------------------------------------------- billing
    async loadBilling() {
      try {
        [this.wallet, this.rates] = await Promise.all([My.orgApi("/wallet"), My.orgApi("/billing/rates")]);
      } catch (e) { this.fail(e); }
    },
    limitText(l) {
      const what = l.unit === "tokens" ? "tokens" : "requests";
      const kind = l.kind ? ` (${l.kind})` : l.class && l.class !== "all" ? ` (${l.class === "job" ? "jobs" : "API calls"})` : "";
      return `${My.num(l.count)} ${what}${kind} per ${l.window} per ${l.scope === "token" ? "API key" : "organization"}`;
    },
    priceText(m) {
      if (m.free || !m.price) return "free";
      const p = m.price, parts = [];
      const d = (v) => "$" + Number(v).toLocaleString("en-US", { maximumFractionDigits: 6 });
      if (p.input_per_1m) parts.push(d(p.input_per_1m) + " / 1M input tokens");
      if (p.output_per_1m) parts.push(d(p.output_per_1m) + " / 1M output tokens");
      if (p.per_request) parts.push(d(p.per_request) + " / request");
      if (p.per_1k_characters) parts.push(d(p.per_1k_characters) + " / 1K characters");
      if (p.per_audio_minute) parts.push(d(p.per_audio_minute) + " / audio minute");
      if (p.per_image) parts.push(typeof p.per_image === "object" ? "per image: " + Object.entries(p.per_image).map(([k, v]) => k + " " + d(v)).join(", ") : d(p.per_image) + " / image");
      if (p.per_video_second) parts.push(typeof p.per_video_second === "object" ? "per video second: " + Object.entries(p.per_video_second).map(([k, v]) => k + " " + d(v)).join(", ") : d(p.per_video_second) + " / video second");
      return parts.join(" · ") + (m.plans ? ` (plans: ${m.plans.join(", ")})` : "");
    },

    // ---------------------------------------------------------------- content filter
    async loadFilter() {
      try {
        this.policy = await My.orgApi("/content-filter-policy");
        this.filterForm = { action: this.policy.action, categories: (this.policy.categories || []).join(", ") };
      } catch (e) {
        if (e.status === 404) this.policy = null; else this.fail(e);
      }
    },
    async saveFilter() {
      const cats = this.filterForm.categories.split(",").map((c) => c.trim()).filter(Boolean);
      const body = { action: this.filterForm.action, categories: cats.length ? cats : null };
      this.busy = true;
      try {
        await My.orgApi("/content-filter-policy", { method: this.policy ? "PATCH" : "POST", body });
        My.toast("Content filter policy saved.");
        await this.loadFilter();
      } catch (e) { this.fail(e); } finally { this.busy = false; }
    },
    deleteFilter() {
      this.confirmText = "Remove this organization's content filter policy?";
      this.onConfirm = async () => {
        await My.orgApi("/content-filter-policy", { method: "DELETE" });
        My.toast("Policy removed.");
        this.policy = null;
      };
      this.$refs.confirm.showModal();
    },

    // ---------------------------------------------------------------- webhooks
    async revealSecret() {
      this.busy = true;
      try { this.webhookSecret = (await My.api("/api/webhook-secret")).secret; } catch (e) { this.fail(e); } finally { this.busy = false; }
    },

    // ---------------------------------------------------------------- request logging
    async loadLogging() {
      try {
        const org = await My.orgApi("");
        const rl = org.request_logging || {};
        this.logging = { bodies: !!rl.bodies, redact: !!rl.redact, retention_days: rl.retention_days || "" };
        this.maxDays = org.request_log_retention_days || 0;
      } catch (e) { this.fail(e); }
    },
    async saveLogging() {
      const days = String(this.logging.retention_days).trim();
      const body = { request_logging: { bodies: this.logging.bodies, redact: this.logging.bodies && this.logging.redact,
                                        retention_days: days === "" ? null : Number(days) } };
      this.busy = true;
      try {
        await My.orgApi("", { method: "PATCH", body });
        My.toast("Request logging saved.");
        await this.loadLogging();
      } catch (e) { this.fail(e); } finally { this.busy = false; }
    },
  }));
});
