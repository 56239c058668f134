"""Thin routes, one module per dialect: parse, call, render."""
