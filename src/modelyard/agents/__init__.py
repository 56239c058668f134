"""Agents: durable workflow graphs whose every node runs as a job (document, checks, engine, service)."""
