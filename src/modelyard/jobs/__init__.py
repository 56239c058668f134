"""The async plane: durable jobs in SQL, claimed with leases by runners, finished through the same router."""
