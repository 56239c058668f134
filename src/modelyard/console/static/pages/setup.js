"use strict";
document.addEventListener("alpine:init", () => {
  Alpine.data("setupPage", () => ({
    email: "", username: "", pass: "", error: "", busy: false,
    async create() {
      this.busy = true;
      this.error = "";
      try {
        await My.api("/api/auth/setup", { body: { email: this.email, password: this.pass, username: this.username || null } });
        location.href = "/";
      } catch (e) {
        this.error = e.message;
      } finally {
        this.busy = false;
      }
    },
  }));
});
