"""Wire schemas and pure converters, one module per dialect; no I/O here."""
