"""Profiling tasks: a Desbordante primitive run on a dataset, its status and result."""
