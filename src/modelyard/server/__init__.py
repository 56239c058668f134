"""The HTTP server: app factory, error rendering, thin routes per dialect."""
