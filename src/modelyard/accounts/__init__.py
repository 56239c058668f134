"""People: users, org memberships and roles, invites, console sessions with CSRF (docs/accounts.md)."""
