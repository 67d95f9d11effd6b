from celery import current_task, shared_task

from facility.models import Site


@shared_task(soft_time_limit=10, time_limit=15)
def probe() -> dict:
    """Round trip through a queue and the database: proves a worker consumes and can read the inventory."""
    return {"worker": current_task.request.hostname, "sites": Site.objects.count()}
