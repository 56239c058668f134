"""Gemini's generateContent API: `schema` (the wire), `inbound` (clients speaking it to us), `outbound` (us calling it)."""
