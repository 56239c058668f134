"""Anthropic's Messages API: `schema` (the wire), `inbound` (clients speaking it to us), `outbound` (us calling it)."""
