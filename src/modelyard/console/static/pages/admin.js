"use strict";
// The operator's page: organizations (create, plan, status, top up), workers, the plans in force, the audit log.
document.addEventListener("alpine:init", () => {
  const TABS = [
    { id: "orgs", label: "Organizations" }, { id: "workers", label: "Workers" },
    { id: "plans", label: "Plans and limits" }, { id: "audit", label: "Audit log" },
  ];
  const ACTIONS = ["organization.create", "organization.update", "wallet.top_up", "token.create", "token.revoke",
    "invite.create", "member.update", "member.remove", "content_filter.create", "content_filter.update",
    "content_filter.delete", "webhook_secret.read"];
  const MONEY = /(_micros)$/;

  Alpine.data("adminPage", () => ({
    tabs: TABS, ACTIONS, tab: "orgs", busy: false, loaded: {},
    orgs: [], org: null, orgForm: { plan: "", status: "active" }, topUpAmount: "", topUpNote: "",
    inviteRole: "owner", inviteEmail: "", inviteLink: null,
    newOrg: { name: "", plan: "free" }, plans: [], planInfo: {}, workers: [],
    audit: [], auditNext: null, auditLoading: false,
    filters: { action: "", org: "", from: "", to: "" },

    get orgNames() { return Object.fromEntries(this.orgs.map((o) => [o.id, o.name])); },

    async init() {
      const q = My.query();
      this.filters = { action: q.action || "", org: q.org || "", from: q.from || "", to: q.to || "" };
      await Promise.all([this.loadOrgs(), this.loadPlans()]);
      this.show(TABS.some((t) => t.id === q.tab) ? q.tab : "orgs", false);
    },
    show(id, keep = true) {
      this.tab = id;
      if (keep) this.keepQuery();
      if (!this.loaded[id]) {
        this.loaded[id] = true;
        if (id === "workers") this.loadWorkers();
        if (id === "audit") this.loadAudit();
      }
    },
    keepQuery() {
      My.setQuery(this.tab === "audit" ? { tab: "audit", ...this.filters } : { tab: this.tab === "orgs" ? "" : this.tab });
    },
    fail(e) { My.toast(e.message, "error"); },

    // ---------------------------------------------------------------- organizations
    async loadOrgs() {
      try { this.orgs = (await My.api("/api/organizations")).data; } catch (e) { this.fail(e); }
    },
    async loadPlans() {
      try {
        this.planInfo = await My.api("/api/plans");
        this.plans = this.planInfo.data;
      } catch (e) { this.fail(e); }
    },
    async open(o) {
      try {
        this.org = await My.api("/api/organizations/" + encodeURIComponent(o.id));
        this.orgForm = { plan: this.org.plan, status: this.org.status };
        this.topUpAmount = "";
        this.topUpNote = "";
        this.inviteLink = null;
        this.$nextTick(() => this.$root.querySelector("[role=region][aria-label^='Organization']").scrollIntoView({ block: "nearest" }));
      } catch (e) { this.fail(e); }
    },
    async topUp() {
      const cents = Math.round(Number(this.topUpAmount) * 100);
      if (!(cents > 0)) { My.toast("Enter an amount above zero.", "error"); return; }
      this.busy = true;
      try {
        const body = { amount_cents: cents };
        if (this.topUpNote.trim()) body.note = this.topUpNote.trim();
        const done = await My.api(`/api/organizations/${encodeURIComponent(this.org.id)}/wallet/top-ups`, { body });
        this.org = { ...this.org, balance_micros: done.balance_micros };
        My.toast(`Added ${My.usd(cents * 10000)} to ${this.org.name}; balance ${My.usd(done.balance_micros)}.`);
        this.topUpAmount = "";
        this.topUpNote = "";
        this.loaded.audit = false;  // the audit log has a new entry
      } catch (e) { this.fail(e); } finally { this.busy = false; }
    },
    async inviteTo() {
      this.busy = true;
      try {
        const body = { role: this.inviteRole };
        if (this.inviteEmail.trim()) body.email = this.inviteEmail.trim();
        this.inviteLink = await My.api(`/api/organizations/${encodeURIComponent(this.org.id)}/invites`, { body });
        this.inviteEmail = "";
        this.loaded.audit = false;
      } catch (e) { this.fail(e); } finally { this.busy = false; }
    },
    async saveOrg() {
      const body = {};
      if (this.orgForm.plan !== this.org.plan) body.plan = this.orgForm.plan;
      if (this.orgForm.status !== this.org.status) body.status = this.orgForm.status;
      if (!Object.keys(body).length) { My.toast("Nothing changed."); return; }
      this.busy = true;
      try {
        this.org = await My.api("/api/organizations/" + encodeURIComponent(this.org.id), { method: "PATCH", body });
        My.toast(`${this.org.name}: plan ${this.org.plan}, ${this.org.status}.`);
        this.loaded.audit = false;
        await Promise.all([this.loadOrgs(), this.loadPlans()]);
      } catch (e) { this.fail(e); } finally { this.busy = false; }
    },
    async createOrg() {
      this.busy = true;
      try {
        const made = await My.api("/api/organizations", { body: { name: this.newOrg.name.trim(), plan: this.newOrg.plan } });
        My.toast(`Created ${made.name}.`);
        this.newOrg.name = "";
        this.loaded.audit = false;
        await Promise.all([this.loadOrgs(), this.loadPlans()]);
        await this.open(made);
      } catch (e) { this.fail(e); } finally { this.busy = false; }
    },

    // ---------------------------------------------------------------- workers
    async loadWorkers() {
      try { this.workers = (await My.api("/api/workers")).data; } catch (e) { this.fail(e); }
    },

    // ---------------------------------------------------------------- audit log
    async loadAudit(more = false) {
      this.keepQuery();
      this.auditLoading = true;
      const q = new URLSearchParams({ limit: "50" });
      for (const k of ["action", "from", "to"]) if (this.filters[k]) q.set(k, this.filters[k]);
      if (this.filters.org) q.set("organization", this.filters.org);
      if (more && this.auditNext) q.set("after", this.auditNext);
      try {
        const page = await My.api("/api/audit-log?" + q.toString());
        this.audit = more ? this.audit.concat(page.data) : page.data;
        this.auditNext = page.has_more ? page.next_after : null;
        this.loaded.audit = true;
      } catch (e) { this.fail(e); } finally { this.auditLoading = false; }
    },
    who(e) {
      if (e.actor_email) return e.actor_email;
      if (e.actor_kind === "cli") return e.actor_id + " (CLI)";
      return e.actor_id;
    },
    // before/after as short "key: value" text; money in dollars
    change(v) {
      if (v === null || v === undefined) return "–";
      if (typeof v !== "object") return String(v);
      return Object.entries(v).map(([k, x]) => {
        if (MONEY.test(k) && typeof x === "number") return k.replace(MONEY, "") + ": " + My.usd(x);
        if (x !== null && typeof x === "object") return k + ": " + JSON.stringify(x);
        return k + ": " + (x === null ? "–" : x);
      }).join(", ");
    },
  }));
});
