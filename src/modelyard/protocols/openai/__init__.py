"""OpenAI's wire formats, no I/O: request schemas (`schema`, `completions`, `media`, `responses`), chat parts and
conversions (`chat_parts`), the Responses event stream (`responses_events`), transcript formats (`transcripts`), and
error envelopes and object shapes (`wire`)."""
