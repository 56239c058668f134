"use strict";
document.addEventListener("alpine:init", () => {
  Alpine.data("invitePage", () => ({
    email: "", username: "", pass: "", error: "", busy: false, who: null,
    async init() {
      try {  // signed in already: join with this account (the session's CSRF token comes with it)
        const s = await My.api("/api/auth/session");
        if (s.user) { My.me.csrf_token = s.csrf_token; this.who = s.user.email; }
      } catch (_) { /* not signed in: create an account */ }
    },
    async joinAsMe() {
      this.busy = true;
      this.error = "";
      try {
        await My.api("/api/auth/accept-invite", { body: { token: My.params.token } });
        location.href = "/";
      } catch (e) {
        this.error = e.message;
      } finally {
        this.busy = false;
      }
    },
    async join() {
      this.busy = true;
      this.error = "";
      try {
        await My.api("/api/auth/accept-invite", {
          body: { token: My.params.token, email: this.email, password: this.pass, username: this.username },
        });
        location.href = "/";
      } catch (e) {
        this.error = e.message;
      } finally {
        this.busy = false;
      }
    },
  }));
});
