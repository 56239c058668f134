"use strict";
document.addEventListener("alpine:init", () => {
  const next = JSON.parse(document.getElementById("next").textContent) || "/";
  Alpine.data("loginPage", () => ({
    mode: "password", email: "", pass: "", key: "", error: "", busy: false,
    async send(path, body) {
      this.busy = true;
      this.error = "";
      try {
        await My.api(path, { body });
        location.href = next;
      } catch (e) {
        this.error = e.message;
      } finally {
        this.busy = false;
      }
    },
    password() { return this.send("/api/auth/login", { email: this.email, password: this.pass }); },
    withKey() { return this.send("/api/auth/login-key", { key: this.key }); },
  }));
});
