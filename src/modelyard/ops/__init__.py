"""Operator tools beside the server: `modelyard doctor` and `modelyard import`."""
