"""The facility inventory: what physically exists, named as operators already name it.

Site → hall → rack → node → GPU on the compute side; site → cooling loops and cooling units (each with
setpoints and their safety envelope) on the cooling side. GPUs carry the labels dcgm-exporter reports
(UUID, index, PCI bus id, model name); nodes their `Hostname`; cooling units Brick/Redfish kinds.
"""

import hashlib
import secrets

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone

from facility.choices import Climate, CoolingLoopKind, CoolingType, CoolingUnitKind, SetpointUnit
from facility.twin.state import server_fan_range_problem

__all__ = ("GPU", "ApiToken", "CoolingLoop", "CoolingUnit", "Hall", "Node", "Rack", "Setpoint", "Site")


class Site(models.Model):
    """A data-centre campus or building: the unit imported and exported as one facility file."""

    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=100)
    climate = models.CharField(
        max_length=10, choices=Climate.choices, default=Climate.MIXED, help_text="Weather used by the twin."
    )
    description = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class Hall(models.Model):
    """A data hall (white space) whose racks share one way of cooling the IT equipment."""

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="halls")
    name = models.CharField(max_length=64)
    cooling_type = models.CharField(max_length=10, choices=CoolingType.choices)
    contained = models.BooleanField(
        default=True, help_text="Hot or cold aisle containment (server inlet ≈ supply air + 1–2 K, else 4–5 K)."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["site", "name"]
        constraints = [models.UniqueConstraint(fields=["site", "name"], name="hall_unique_name_per_site")]

    def __str__(self):
        return self.name


class CoolingLoop(models.Model):
    """A closed water circuit: chilled water, condenser water, facility water or a CDU's secondary (TCS)."""

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="cooling_loops")
    name = models.CharField(max_length=64)
    kind = models.CharField(max_length=24, choices=CoolingLoopKind.choices)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["site", "name"]
        constraints = [models.UniqueConstraint(fields=["site", "name"], name="loop_unique_name_per_site")]

    def __str__(self):
        return self.name


class CoolingUnit(models.Model):
    """A piece of cooling plant (CRAH, CDU, chiller, tower, pump...) in a hall or in the site's central plant.

    Its `name` is the point prefix telemetry sources use (Brick/BMS point names, Redfish CoolingUnit Id).
    """

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="cooling_units")
    hall = models.ForeignKey(
        Hall, on_delete=models.CASCADE, null=True, blank=True, related_name="cooling_units",
        help_text="Empty for central plant (chillers, towers, pumps).",
    )
    name = models.CharField(max_length=64)
    kind = models.CharField(max_length=16, choices=CoolingUnitKind.choices)
    supply_loop = models.ForeignKey(
        CoolingLoop, on_delete=models.PROTECT, null=True, blank=True, related_name="supplied_by",
        help_text="Loop this unit supplies (chiller → chilled water, CDU → its secondary).",
    )
    return_loop = models.ForeignKey(
        CoolingLoop, on_delete=models.PROTECT, null=True, blank=True, related_name="rejected_to_by",
        help_text="Loop this unit takes its cooling from or rejects heat to.",
    )
    capacity_kw = models.FloatField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["site", "name"]
        constraints = [models.UniqueConstraint(fields=["site", "name"], name="unit_unique_name_per_site")]

    def __str__(self):
        return self.name

    def clean(self):
        if self.hall_id and self.hall.site_id != self.site_id:
            raise ValidationError({"hall": "The hall belongs to another site."})
        if self.kind == CoolingUnitKind.SERVER_FANS:
            if not self.hall_id:
                raise ValidationError({"hall": "Server fans belong to a hall: they are its nodes' fans."})
            others = CoolingUnit.objects.filter(hall_id=self.hall_id, kind=self.kind).exclude(pk=self.pk)
            if others.exists():
                raise ValidationError({"kind": f"Hall {self.hall} already has server fans ({others.first()}); "
                                               "a hall has one fan duty."})


class Rack(models.Model):
    """A rack position in a hall, cooled by the units listed in `cooled_by` (CRAHs of the hall, or a CDU)."""

    hall = models.ForeignKey(Hall, on_delete=models.CASCADE, related_name="racks")
    name = models.CharField(max_length=64)
    row = models.PositiveSmallIntegerField(default=1)
    position = models.PositiveSmallIntegerField(default=1, help_text="Position along the row.")
    cooled_by = models.ManyToManyField(CoolingUnit, blank=True, related_name="racks")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["hall", "row", "position", "name"]
        constraints = [models.UniqueConstraint(fields=["hall", "name"], name="rack_unique_name_per_hall")]

    def __str__(self):
        return self.name


class Node(models.Model):
    """A GPU server, identified by the `Hostname` label dcgm-exporter puts on its series."""

    rack = models.ForeignKey(Rack, on_delete=models.CASCADE, related_name="nodes")
    hostname = models.CharField(max_length=253, unique=True)
    slot = models.PositiveSmallIntegerField(default=1, help_text="Position in the rack, bottom up.")
    model = models.CharField(max_length=64, default="HGX H100 8-GPU")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["rack", "slot", "hostname"]

    def __str__(self):
        return self.hostname


class GPU(models.Model):
    """One GPU as DCGM reports it: index on its node (`gpu`), `UUID`, `pci_bus_id`, `modelName`."""

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="gpus")
    index = models.PositiveSmallIntegerField()
    uuid = models.CharField("UUID", max_length=64, unique=True)
    model = models.CharField(max_length=64, default="NVIDIA H100 80GB HBM3")
    pci_bus_id = models.CharField("PCI bus id", max_length=32, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["node", "index"]
        verbose_name = "GPU"
        constraints = [models.UniqueConstraint(fields=["node", "index"], name="gpu_unique_index_per_node")]

    def __str__(self):
        return f"{self.node.hostname}/gpu{self.index}"


class Setpoint(models.Model):
    """A writable control point of a cooling unit (Redfish Control `SetPoint`) and its safety envelope.

    `value` is the last value read back from the plant; it changes only through approved setpoint changes.
    The envelope (allowable range, step, rate, dwell) is what the control app enforces on every path.
    """

    cooling_unit = models.ForeignKey(CoolingUnit, on_delete=models.CASCADE, related_name="setpoints")
    name = models.CharField(max_length=64, help_text="Brick-style point name, e.g. supply_air_temperature_setpoint.")
    unit = models.CharField(max_length=24, choices=SetpointUnit.choices)
    value = models.FloatField(help_text="Current value, as read back from the plant.")
    allowable_min = models.FloatField()
    allowable_max = models.FloatField()
    max_step = models.FloatField(help_text="Largest change allowed in one setpoint change.")
    max_rate_per_minute = models.FloatField(
        null=True, blank=True, help_text="Largest sustained rate of change (unit per minute); empty for none."
    )
    min_dwell_seconds = models.PositiveIntegerField(default=300, help_text="Minimum time between changes.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["cooling_unit", "name"]
        constraints = [
            models.UniqueConstraint(fields=["cooling_unit", "name"], name="setpoint_unique_name_per_unit"),
            models.CheckConstraint(
                condition=Q(allowable_min__lte=models.F("allowable_max")), name="setpoint_min_le_max"
            ),
            models.CheckConstraint(condition=Q(max_step__gt=0), name="setpoint_step_positive"),
        ]

    def __str__(self):
        return f"{self.cooling_unit.name}.{self.name}"

    def clean(self):
        if self.allowable_min is not None and self.allowable_max is not None:
            if self.allowable_min > self.allowable_max:
                raise ValidationError({"allowable_max": "Must not be below allowable_min."})
            kind = self.cooling_unit.kind if self.cooling_unit_id else ""
            if problem := server_fan_range_problem(kind, self.name, self.unit, self.allowable_min, self.allowable_max):
                raise ValidationError({"allowable_min": problem})
            if self.value is not None and not self.allowable_min <= self.value <= self.allowable_max:
                raise ValidationError({"value": "Must lie within the allowable range."})


class ApiToken(models.Model):
    """A personal API token an integration uses to act as its user, limited to the roles chosen for it.

    The token (`fdu_<prefix>_<secret>`) is shown once; only its prefix and SHA-256 are stored (it is 256 bits
    of randomness, so no password stretching is needed). It stops working when revoked or expired.
    """

    PREFIX = "fdu_"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, help_text="What uses it, e.g. 'Grafana' or 'ticketing bridge'.")
    roles = models.ManyToManyField("auth.Group", help_text="The token may do only what these roles allow.")
    token_prefix = models.CharField(max_length=12, unique=True, editable=False)
    token_hash = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API token"

    def __str__(self):
        return f"{self.name} ({self.user})"

    def issue(self) -> str:
        self.token_prefix = secrets.token_hex(6)
        token = f"{self.PREFIX}{self.token_prefix}_{secrets.token_urlsafe(32)}"
        self.token_hash = hashlib.sha256(token.encode()).hexdigest()
        return token

    @classmethod
    def authenticate(cls, token: str) -> "ApiToken | None":
        if not token.startswith(cls.PREFIX) or token.count("_") < 2:
            return None
        prefix = token[len(cls.PREFIX):].split("_", 1)[0]
        found = cls.objects.filter(token_prefix=prefix, revoked_at__isnull=True, expires_at__gt=timezone.now(),
                                   user__is_active=True).select_related("user").first()
        if found is None or not secrets.compare_digest(found.token_hash, hashlib.sha256(token.encode()).hexdigest()):
            return None
        return found

    @property
    def active(self) -> bool:
        return self.revoked_at is None and self.expires_at > timezone.now()

    def scope(self) -> set[str]:
        """`app_label.codename` of every permission the token's roles grant."""
        from django.contrib.auth.models import Permission

        return {
            f"{app}.{codename}"
            for app, codename in Permission.objects.filter(group__in=self.roles.all()).values_list(
                "content_type__app_label", "codename"
            )
        }
