"""Celery app, thin tasks, hardware pinning, the results writer and the job execution."""
