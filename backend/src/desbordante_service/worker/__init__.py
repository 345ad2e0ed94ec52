"""Celery application and the jobs the workers run."""
