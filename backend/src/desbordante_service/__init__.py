"""Desbordante profiling web service: upload CSV datasets, profile them in Celery workers."""

__version__ = "0.1.0"
