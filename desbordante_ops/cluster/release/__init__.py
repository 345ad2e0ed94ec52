"""Releases: deploy (the orchestrator), prod gate, ledger, waits, rollback, lock, teardown."""
