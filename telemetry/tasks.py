"""Celery tasks of the telemetry app (queue `ingest`)."""

from celery import current_task, shared_task

from telemetry import writer


@shared_task(soft_time_limit=30, time_limit=60)
def drain_buffer(time_budget_s: float = 5.0) -> dict:
    """Store buffered telemetry; beat runs it every second, several writers may run at once."""
    consumer = current_task.request.hostname or "inprocess"
    report = writer.drain(consumer, time_budget_s=time_budget_s)
    return report.__dict__
