"""Celery tasks of the `control` queue: apply approved changes, and the beat sweeps.

`apply_setpoint_change` is idempotent (see control.changes.apply_change), so it acknowledges late: a
worker that dies mid-task has its message redelivered, and the redelivery does nothing twice.
"""

from celery import shared_task

from control import changes

# Actuator I/O is bounded by its own timeouts (Modbus, twin command channel); these limits catch the rest.
_LIMITS = {"soft_time_limit": 60, "time_limit": 90}


@shared_task(name="control.tasks.apply_setpoint_change", acks_late=True, reject_on_worker_lost=True, **_LIMITS)
def apply_setpoint_change(change_id: int) -> dict:
    return changes.apply_change(change_id)


@shared_task(name="control.tasks.expire_changes", **_LIMITS)
def expire_changes() -> dict:
    return changes.expire_changes()


@shared_task(name="control.tasks.watch_changes", **_LIMITS)
def watch_changes() -> dict:
    return changes.watch_changes()


@shared_task(name="control.tasks.telemetry_watchdog", **_LIMITS)
def telemetry_watchdog() -> dict:
    return changes.telemetry_watchdog()


@shared_task(name="control.tasks.run_policies", **_LIMITS)
def run_policies() -> dict:
    """Beat: every enabled policy run whose interval has passed files its proposals (control.runner)."""
    from control.runner import run_due_policies

    return run_due_policies()
