"""Celery tasks of the telemetry app (queue `ingest`)."""

from celery import current_task, shared_task

from telemetry import maintenance, rollups, scrape, writer


@shared_task(soft_time_limit=30, time_limit=60)
def drain_buffer(time_budget_s: float = 5.0) -> dict:
    """Store buffered telemetry; beat runs it every second, several writers may run at once."""
    consumer = current_task.request.hostname or "inprocess"
    report = writer.drain(consumer, time_budget_s=time_budget_s)
    return report.__dict__


@shared_task(soft_time_limit=120, time_limit=180)
def roll_up() -> dict:
    """Maintain the 1 min and 1 h rollups (beat: every 30 s)."""
    return {str(k): v for k, v in rollups.roll_up().items()}


@shared_task(soft_time_limit=300, time_limit=360)
def enforce_retention() -> dict:
    """Drop data past its retention and trim the buffer (beat: hourly)."""
    return maintenance.enforce_retention()


@shared_task(soft_time_limit=60, time_limit=90)
def scrape_targets() -> dict:
    """Poll the dcgm-exporter and Redfish targets that are due (beat: every 5 s)."""
    return scrape.scrape_due()
