"""What every request passes through: auth, scopes, and (later) limits, filter, billing, usage."""
