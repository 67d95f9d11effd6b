"""Celery tasks of the inference app (queue `inference`, see CELERY_TASK_ROUTES)."""

from celery import current_task, shared_task

from inference.serving import get_server


@shared_task(soft_time_limit=60, time_limit=90)
def forecast_step() -> dict:
    """One serving step: new telemetry since the last one → one batched decode → forecasts (beat: every 5 s).

    The model and the per-GPU latent caches live in this worker process between steps; a fresh process
    rebuilds them from stored history by prefill."""
    server = get_server()
    hostname = getattr(current_task.request, "hostname", None) if current_task else None
    if hostname and not server.worker.startswith(hostname):
        server.worker = f"{hostname}:{server.worker.rsplit(':', 1)[-1]}"
    return server.step().as_dict()
