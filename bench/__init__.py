"""Benchmarks of desbordante-ops: `python -m bench [NAME ...]` (or `nox -s bench -- NAME`)."""
