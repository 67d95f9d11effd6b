"""Supervised control: setpoint changes and their approval, the audit log, autonomy, plant register maps.

A setpoint change moves through Pending → Approved / Denied / Canceled / Expired → Applying → Applied /
Failed → Rolled back (Nautobot's approval vocabulary plus ours). Transitions happen only in
`control.changes`, which runs every value through `control.envelope` first; the models here hold state
and refuse the edits that would rewrite history.
"""

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import models
from django.utils import timezone

from facility.models import Setpoint, Site

__all__ = (
    "AuditAction",
    "AuditEntry",
    "AutonomySetting",
    "ChangeOrigin",
    "ChangeState",
    "ControllerPause",
    "ModbusPoint",
    "SetpointChange",
)


class ChangeState(models.TextChoices):
    PENDING = "pending", "Pending"
    APPROVED = "approved", "Approved"
    DENIED = "denied", "Denied"
    CANCELED = "canceled", "Canceled"
    EXPIRED = "expired", "Expired"
    APPLYING = "applying", "Applying"
    APPLIED = "applied", "Applied"
    FAILED = "failed", "Failed"
    ROLLED_BACK = "rolled_back", "Rolled back"


# Allowed transitions; `control.changes` refuses anything else.
TRANSITIONS: dict[str, frozenset[str]] = {
    ChangeState.PENDING: frozenset({ChangeState.APPROVED, ChangeState.DENIED, ChangeState.CANCELED,
                                    ChangeState.EXPIRED}),
    ChangeState.APPROVED: frozenset({ChangeState.APPLYING, ChangeState.CANCELED, ChangeState.EXPIRED,
                                     ChangeState.FAILED}),
    ChangeState.APPLYING: frozenset({ChangeState.APPLIED, ChangeState.FAILED}),
    ChangeState.APPLIED: frozenset({ChangeState.ROLLED_BACK}),
    ChangeState.DENIED: frozenset(),
    ChangeState.CANCELED: frozenset(),
    ChangeState.EXPIRED: frozenset(),
    ChangeState.FAILED: frozenset(),
    ChangeState.ROLLED_BACK: frozenset(),
}
OPEN_STATES = (ChangeState.PENDING, ChangeState.APPROVED, ChangeState.APPLYING)


class ChangeOrigin(models.TextChoices):
    OPERATOR = "operator", "Operator"
    POLICY = "policy", "Policy"
    ROLLBACK = "rollback", "Automatic rollback"


class SetpointChange(models.Model):
    """A request to move one plant setpoint from one value to another, and everything that happened to it.

    Proposed by an operator (`proposed_by`) or by a policy (`policy`, run by `proposed_by`); decided by an
    approver who is not the proposer (or automatically, for autonomous points and rollbacks); applied by the
    `control` Celery queue through an actuator, read back, and watched for its effect.
    """

    setpoint = models.ForeignKey(Setpoint, on_delete=models.PROTECT, related_name="changes")
    state = models.CharField(max_length=16, choices=ChangeState.choices, default=ChangeState.PENDING,
                             db_index=True)
    state_reason = models.TextField(blank=True, help_text="Why it failed, expired or was rolled back.")
    origin = models.CharField(max_length=16, choices=ChangeOrigin.choices, default=ChangeOrigin.OPERATOR)
    from_value = models.FloatField(help_text="The setpoint's read-back when the change was proposed.")
    to_value = models.FloatField(help_text="The value to write, already inside the envelope.")
    requested_value = models.FloatField(null=True, blank=True,
                                        help_text="What the proposer asked for before the envelope clipped it.")
    proposed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+",
        help_text="The operator who proposed it, or who started the policy run that did.",
    )
    policy = models.CharField(max_length=64, blank=True, help_text="Policy name when a policy proposed it.")
    autonomous = models.BooleanField(default=False, help_text="Approved by the point's autonomous mode.")
    rollback_of = models.ForeignKey("self", on_delete=models.PROTECT, null=True, blank=True,
                                    related_name="rollbacks")
    rationale = models.TextField(blank=True)
    predicted_effect = models.JSONField(default=dict, blank=True)
    telemetry_snapshot = models.JSONField(default=dict, blank=True)
    envelope_verdict = models.JSONField(default=dict, blank=True)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True,
                                   related_name="+")
    decision_comment = models.TextField(blank=True)
    readback_value = models.FloatField(null=True, blank=True)
    measured_effect = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    expires_at = models.DateTimeField()
    decided_at = models.DateTimeField(null=True, blank=True)
    written_at = models.DateTimeField(null=True, blank=True, help_text="When the actuator was written.")
    finished_at = models.DateTimeField(null=True, blank=True, help_text="Applied or failed.")
    watch_until = models.DateTimeField(null=True, blank=True, help_text="End of the post-application watch.")
    watch_outcome = models.CharField(max_length=16, blank=True,
                                     help_text="Empty while watched; ok, breach or no_data after.")
    apply_after = models.DateTimeField(null=True, blank=True,
                                       help_text="Approved, waiting for dwell or rate until then.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [
            ("approve_setpointchange", "Can approve or deny setpoint changes"),
            ("run_policy", "Can run control policies"),
        ]
        indexes = [models.Index(fields=["setpoint", "state"], name="change_setpoint_state")]

    def __str__(self):
        return f"#{self.pk} {self.setpoint}: {self.from_value:g} → {self.to_value:g} ({self.get_state_display()})"

    @property
    def proposer_label(self) -> str:
        who = self.proposed_by.get_username() if self.proposed_by_id else "system"
        if self.policy:
            return f"policy {self.policy} (run by {who})"
        return who


class AuditAction(models.TextChoices):
    PROPOSED = "proposed", "Proposed"
    REFUSED = "refused", "Refused by the envelope"
    APPROVED = "approved", "Approved"
    DENIED = "denied", "Denied"
    CANCELED = "canceled", "Canceled"
    EXPIRED = "expired", "Expired"
    APPLYING = "applying", "Applying"
    APPLIED = "applied", "Applied"
    FAILED = "failed", "Failed"
    ROLLBACK = "rollback", "Rollback started"
    ROLLED_BACK = "rolled_back", "Rolled back"
    WATCH = "watch", "Watch window result"
    ENVELOPE_CHANGED = "envelope_changed", "Envelope changed"
    AUTONOMY_CHANGED = "autonomy_changed", "Autonomy changed"
    AUTONOMY_BUDGET = "autonomy_budget", "Autonomous budget used up"
    PAUSED = "paused", "Controllers paused"
    RESUMED = "resumed", "Controllers resumed"
    LOGIN = "login", "Signed in"
    LOGIN_FAILED = "login_failed", "Sign-in failed"
    LOGOUT = "logout", "Signed out"
    TOKEN_USED = "token_used", "API token used"


class AuditEntry(models.Model):
    """One line of the append-only control log: who did what to which setpoint, why, and what the plant showed.

    Rows are only ever inserted: `save` refuses updates and `delete` refuses always (the admin and API
    offer neither). References are kept without database constraints so deleting inventory never
    rewrites the log; `subject` keeps the name as it was.
    """

    at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.DO_NOTHING, db_constraint=False,
                              null=True, blank=True, related_name="+")
    actor_label = models.CharField(max_length=150, help_text="User name, or policy/system as it was.")
    action = models.CharField(max_length=24, choices=AuditAction.choices)
    change = models.ForeignKey(SetpointChange, on_delete=models.DO_NOTHING, db_constraint=False, null=True,
                               blank=True, related_name="audit")
    setpoint = models.ForeignKey(Setpoint, on_delete=models.DO_NOTHING, db_constraint=False, null=True,
                                 blank=True, related_name="+")
    site = models.ForeignKey(Site, on_delete=models.DO_NOTHING, db_constraint=False, null=True, blank=True,
                             related_name="+")
    subject = models.CharField(max_length=200, blank=True, help_text="The setpoint or site, named as it was.")
    message = models.TextField(blank=True, help_text="Why: comment, rationale or reasons.")
    data = models.JSONField(default=dict, blank=True, help_text="Values, verdict, telemetry snapshot.")

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name_plural = "audit entries"
        default_permissions = ("view",)

    def __str__(self):
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor_label} {self.action} {self.subject}"

    def save(self, *args, **kwargs):
        if self.pk is not None and not self._state.adding:
            raise PermissionDenied("Audit entries are append-only.")
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise PermissionDenied("Audit entries are append-only.")


class AutonomySetting(models.Model):
    """Whether policy proposals for one setpoint apply without a human approval, and how often they may.

    Still inside the envelope; only policy proposals qualify (an operator's own change always needs a second
    person), and at most `daily_change_budget` autonomous changes per rolling 24 h.
    """

    setpoint = models.OneToOneField(Setpoint, on_delete=models.CASCADE, related_name="autonomy")
    autonomous = models.BooleanField(default=False)
    daily_change_budget = models.PositiveIntegerField(default=24, help_text="Autonomous changes per 24 h.")
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                   related_name="+")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["setpoint"]

    def __str__(self):
        return f"{self.setpoint}: {'autonomous' if self.autonomous else 'supervised'}"


class ControllerPause(models.Model):
    """Whether a site's controllers are paused (stale telemetry or by hand), and since when and why."""

    site = models.OneToOneField(Site, on_delete=models.CASCADE, related_name="controller_pause")
    paused = models.BooleanField(default=False)
    reason = models.TextField(blank=True)
    automatic = models.BooleanField(default=True, help_text="Set by the stale-telemetry watchdog.")
    since = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["site"]

    def __str__(self):
        return f"{self.site}: {'paused' if self.paused else 'running'}"


class ModbusPoint(models.Model):
    """Where a setpoint lives on a Modbus TCP device (BMS gateway, CDU controller): its holding registers.

    Raw register = round(value × scale) as a 16-bit integer (two's complement when `signed`); the read-back
    register is the same one unless the device reports its active setpoint elsewhere.
    """

    setpoint = models.OneToOneField(Setpoint, on_delete=models.CASCADE, related_name="modbus")
    host = models.CharField(max_length=253)
    port = models.PositiveIntegerField(default=502)
    unit_id = models.PositiveSmallIntegerField(default=1, help_text="Modbus device (slave) id.")
    register = models.PositiveIntegerField(help_text="Holding register written (0-based address).")
    readback_register = models.PositiveIntegerField(null=True, blank=True,
                                                    help_text="Holding register read back; empty: the same one.")
    scale = models.FloatField(default=10.0, help_text="Raw counts per unit (10: 0.1 °C resolution).")
    signed = models.BooleanField(default=True)
    timeout_seconds = models.FloatField(default=2.0)

    class Meta:
        ordering = ["setpoint"]
        verbose_name = "Modbus point"
        constraints = [models.CheckConstraint(condition=models.Q(scale__gt=0), name="modbus_scale_positive")]

    def __str__(self):
        return f"{self.setpoint} @ {self.host}:{self.port}/{self.unit_id}#{self.register}"


# --- Envelope edits go into the audit log, whichever path saved them (admin, API, facility import) ----

ENVELOPE_FIELDS = ("allowable_min", "allowable_max", "max_step", "max_rate_per_minute", "min_dwell_seconds")


def _envelope_before(sender, instance, raw=False, **kwargs):
    if raw:
        return
    instance._control_envelope_before = (
        Setpoint.objects.filter(pk=instance.pk).values(*ENVELOPE_FIELDS).first() if instance.pk else None
    )


def _envelope_after(sender, instance, created, raw=False, **kwargs):
    if raw:
        return
    from control.middleware import current_user

    before = getattr(instance, "_control_envelope_before", None)
    after = {f: getattr(instance, f) for f in ENVELOPE_FIELDS}
    if before == after:
        return
    changed = sorted(f for f in ENVELOPE_FIELDS if before is None or before[f] != after[f])
    actor = current_user()
    AuditEntry.objects.create(
        actor=actor, actor_label=actor.get_username() if actor is not None else "system",
        action=AuditAction.ENVELOPE_CHANGED, setpoint=instance, site_id=instance.cooling_unit.site_id,
        subject=str(instance)[:200], message=("created: " if created else "changed: ") + ", ".join(changed),
        data={"before": before, "after": after},
    )


models.signals.pre_save.connect(_envelope_before, sender=Setpoint, dispatch_uid="control.envelope_before")
models.signals.post_save.connect(_envelope_after, sender=Setpoint, dispatch_uid="control.envelope_after")


# --- Policy runs and learned policies (control.runner, control.rl) -------------------------------------

__all__ += ("PolicyModelVersion", "PolicyRun")


class PolicyModelVersion(models.Model):
    """A trained control policy (offline RL): its config (network, features and envelopes it was built for),
    the logged data it learned from, held-out metrics, and its checkpoint with the SHA-256 it must still have
    when loaded. At most one version per policy name is active; the `rl` policy runs the active one."""

    name = models.CharField(max_length=100, unique=True)
    policy = models.CharField(max_length=64, default="rl", help_text="The registered policy that runs it.")
    algorithm = models.CharField(max_length=16, help_text="td3bc or iql.")
    site = models.ForeignKey(Site, on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
                             help_text="Site whose facility it was trained for (empty: the demo facility file).")
    config = models.JSONField(help_text="Checkpoint config: agent, features (halls, points, envelopes).")
    training = models.JSONField(default=dict, blank=True, help_text="Training hyper-parameters.")
    data = models.JSONField(default=dict, blank=True,
                            help_text="Where the transitions came from: behaviours, climates, episodes, size.")
    data_start = models.DateTimeField(null=True, blank=True)
    data_end = models.DateTimeField(null=True, blank=True)
    metrics = models.JSONField(default=dict, blank=True, help_text="Held-out offline metrics (and evaluations).")
    training_curves = models.JSONField(default=list, blank=True)
    training_seconds = models.FloatField(null=True, blank=True)
    checkpoint_path = models.CharField(max_length=500)
    checksum_sha256 = models.CharField("SHA-256", max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    active = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["policy"], condition=models.Q(active=True),
                                    name="one_active_policy_model"),
        ]

    def __str__(self):
        return self.name

    def activate(self):
        from django.db import transaction

        with transaction.atomic():
            PolicyModelVersion.objects.select_for_update().filter(policy=self.policy, active=True).exclude(
                pk=self.pk).update(active=False)
            self.active = True
            self.save(update_fields=["active"])

    def load(self):
        """(agent, feature spec, checkpoint JSON), verified against this record's checksum and config."""
        from control.rl.checkpoint import load_checkpoint

        return load_checkpoint(self.checkpoint_path, expected_sha256=self.checksum_sha256,
                               expected_config=self.config)


class PolicyRun(models.Model):
    """A policy run on a schedule for one site: every `interval_seconds` (while enabled and the site's
    controllers are not paused) the `control.tasks.run_policies` beat task builds the live state, calls the
    policy and files its proposals as Pending changes proposed by `started_by`."""

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="policy_runs")
    policy = models.CharField(max_length=64, help_text="Registered policy name (control.policies).")
    params = models.JSONField(default=dict, blank=True, help_text="Keyword arguments for the policy.")
    enabled = models.BooleanField(default=True)
    started_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+",
                                   help_text="The operator who started it: the proposer of its changes.")
    started_at = models.DateTimeField(default=timezone.now)
    stopped_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                   related_name="+")
    stopped_at = models.DateTimeField(null=True, blank=True)
    interval_seconds = models.PositiveIntegerField(default=60)
    last_run_at = models.DateTimeField(null=True, blank=True)
    last_outcome = models.CharField(max_length=16, blank=True,
                                    help_text="proposed, nothing, paused, refused, error or stopped.")
    last_message = models.TextField(blank=True)
    runs = models.PositiveIntegerField(default=0)
    proposals_filed = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["site", "policy", "-started_at"]
        constraints = [
            models.UniqueConstraint(fields=["site", "policy"], condition=models.Q(enabled=True),
                                    name="one_enabled_run_per_site_policy"),
            models.CheckConstraint(condition=models.Q(interval_seconds__gte=10), name="policy_run_interval_min"),
        ]

    def __str__(self):
        return f"{self.policy} on {self.site} ({'running' if self.enabled else 'stopped'})"
