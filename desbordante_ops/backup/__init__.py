"""Backups of an environment (local stack, stage, prod): one archive, restored the same way."""
