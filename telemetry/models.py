"""Telemetry storage and the sources that feed it.

Samples live in two time-partitioned tables (PostgreSQL declarative partitions by day; plain tables on
SQLite): a wide row per GPU per timestamp for the hot DCGM fields, and a narrow row per series for
cooling and site points. Rollups at 1 min and 1 h are recomputed per bucket from those rows, so they are
as exact as the raw data. `AppliedEntry` is the exactly-once ledger of buffer entries already stored.
"""

import hashlib
import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone

from facility.models import GPU, CoolingUnit, Site
from telemetry.schema import GPU_COLUMNS, INTEGER_COLUMNS

__all__ = (
    "AppliedEntry", "DirtyBucket", "GpuRollup", "GpuSample", "PointRollup", "PointSample", "RollupState",
    "ScrapeTarget", "Series", "Source", "UnknownEntity",
)

TOKEN_PREFIX = "fdc_"  # noqa: S105 — a public marker, not a secret


class SourceKind(models.TextChoices):
    DCGM = "dcgm", "dcgm-exporter (Prometheus text)"
    REDFISH = "redfish", "Redfish cooling unit"
    JSON = "json", "JSON batches"
    STREAM = "stream", "Websocket stream"
    TWIN = "twin", "Digital twin"


class Source(models.Model):
    """A telemetry source (an exporter, a BMS gateway, the twin) and its API token, stored hashed.

    The token is `fdc_<prefix>_<secret>`; only the prefix (to find the row) and the SHA-256 of the whole
    token are kept. Tokens are 256-bit random strings, so a plain hash is enough (no password stretching).
    """

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=10, choices=SourceKind.choices)
    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="telemetry_sources")
    token_prefix = models.CharField(max_length=12, unique=True, editable=False)
    token_hash = models.CharField(max_length=64, editable=False)
    rate_limit_per_minute = models.PositiveIntegerField(
        default=600, help_text="Requests per minute this source may make; 0 for no limit."
    )
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    @staticmethod
    def _hash(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    def issue_token(self) -> str:
        """Set a new token (replacing any old one) and return it; it is never retrievable again."""
        self.token_prefix = secrets.token_hex(6)
        token = f"{TOKEN_PREFIX}{self.token_prefix}_{secrets.token_urlsafe(32)}"
        self.token_hash = self._hash(token)
        return token

    @classmethod
    def authenticate(cls, token: str) -> "Source | None":
        if not token.startswith(TOKEN_PREFIX) or token.count("_") < 2:
            return None
        prefix = token[len(TOKEN_PREFIX):].split("_", 1)[0]
        source = cls.objects.filter(token_prefix=prefix, revoked_at__isnull=True).select_related("site").first()
        if source is None or not secrets.compare_digest(source.token_hash, cls._hash(token)):
            return None
        return source

    def revoke(self):
        self.revoked_at = timezone.now()
        self.save(update_fields=["revoked_at"])


class ScrapeTarget(models.Model):
    """An endpoint FuseDC polls for a source: a dcgm-exporter `/metrics` URL or a Redfish cooling-unit resource.

    Credentials never live in the database: `auth_env` names an environment variable holding `user:password`
    (HTTP basic auth, as BMCs and Redfish services expect).
    """

    class Kind(models.TextChoices):
        PROMETHEUS = "prometheus", "Prometheus / dcgm-exporter text"
        REDFISH = "redfish", "Redfish JSON"

    source = models.ForeignKey(Source, on_delete=models.CASCADE, related_name="scrape_targets")
    kind = models.CharField(max_length=12, choices=Kind.choices)
    url = models.URLField(max_length=500)
    cooling_unit = models.CharField(max_length=64, blank=True,
                                    help_text="Redfish: the inventory name of the unit the resource describes.")
    auth_env = models.CharField(max_length=64, blank=True, help_text="Environment variable with user:password.")
    interval_seconds = models.PositiveIntegerField(default=15)
    timeout_seconds = models.FloatField(default=5.0)
    enabled = models.BooleanField(default=True)
    last_scraped_at = models.DateTimeField(null=True, blank=True)
    last_status = models.CharField(max_length=200, blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["source", "url"]
        constraints = [models.UniqueConstraint(fields=["source", "url"], name="scrape_target_unique_url")]

    def __str__(self):
        return self.url


class UnknownEntity(models.Model):
    """Something a source reported that is not in the inventory, kept (with a count) for an admin to map."""

    source = models.ForeignKey(Source, on_delete=models.CASCADE, related_name="unknown_entities")
    kind = models.CharField(max_length=16)  # gpu | cooling_unit
    key = models.CharField(max_length=300, help_text="How the source named it, e.g. uuid=GPU-… or host/gpu.")
    samples = models.BigIntegerField(default=0)
    first_seen = models.DateTimeField(auto_now_add=True)
    last_seen = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-last_seen"]
        constraints = [models.UniqueConstraint(fields=["source", "kind", "key"], name="unknown_entity_unique")]

    def __str__(self):
        return f"{self.kind} {self.key}"


class Series(models.Model):
    """A cooling-unit or site point: which equipment, which part of it (e.g. a CDU's secondary), which metric."""

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="series")
    cooling_unit = models.ForeignKey(CoolingUnit, on_delete=models.CASCADE, null=True, blank=True,
                                     related_name="series")
    point = models.CharField(max_length=100, blank=True, help_text="Sub-resource, e.g. SecondaryCoolantConnectors/1.")
    metric = models.CharField(max_length=100)

    class Meta:
        verbose_name_plural = "series"
        constraints = [
            models.UniqueConstraint(fields=["site", "cooling_unit", "point", "metric"], name="series_unique",
                                    nulls_distinct=False),
        ]

    def __str__(self):
        owner = self.cooling_unit.name if self.cooling_unit_id else "site"
        return f"{owner}{'/' + self.point if self.point else ''}:{self.metric}"


def _gpu_metric_fields(prefixes=("",)) -> dict:
    fields = {}
    for column in GPU_COLUMNS.values():
        for prefix in prefixes:
            integer = column in INTEGER_COLUMNS and prefix in ("", "max_", "min_")
            fields[prefix + column] = models.BigIntegerField(null=True) if integer else models.FloatField(null=True)
    return fields


class GpuSample(models.Model):
    """One scrape of one GPU: the hot DCGM fields side by side (NULL where the source did not send one)."""

    pk = models.CompositePrimaryKey("gpu_id", "time")
    gpu = models.ForeignKey(GPU, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False,
                            related_name="+")
    time = models.DateTimeField()
    locals().update(_gpu_metric_fields())


class PointSample(models.Model):
    """One reading of a cooling or site point."""

    pk = models.CompositePrimaryKey("series_id", "time")
    series = models.ForeignKey(Series, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False,
                            related_name="+")
    time = models.DateTimeField()
    value = models.FloatField()


class Resolution(models.IntegerChoices):
    MINUTE = 60, "1 min"
    HOUR = 3600, "1 h"


class GpuRollup(models.Model):
    """Per-GPU aggregates over a minute or an hour: mean, min and max of each hot field, and the count."""

    pk = models.CompositePrimaryKey("resolution", "gpu_id", "bucket")
    resolution = models.PositiveIntegerField(choices=Resolution.choices)
    gpu = models.ForeignKey(GPU, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False,
                            related_name="+")
    bucket = models.DateTimeField()
    count = models.PositiveIntegerField()
    locals().update(_gpu_metric_fields(prefixes=("avg_", "min_", "max_")))


class PointRollup(models.Model):
    pk = models.CompositePrimaryKey("resolution", "series_id", "bucket")
    resolution = models.PositiveIntegerField(choices=Resolution.choices)
    series = models.ForeignKey(Series, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False,
                            related_name="+")
    bucket = models.DateTimeField()
    count = models.PositiveIntegerField()
    avg = models.FloatField()
    min = models.FloatField()
    max = models.FloatField()


class RollupState(models.Model):
    """Rollups are complete up to `done_until` for a resolution; late samples mark their buckets dirty."""

    resolution = models.PositiveIntegerField(choices=Resolution.choices, primary_key=True)
    done_until = models.DateTimeField()


class DirtyBucket(models.Model):
    pk = models.CompositePrimaryKey("resolution", "bucket")
    resolution = models.PositiveIntegerField(choices=Resolution.choices)
    bucket = models.DateTimeField()


class AppliedEntry(models.Model):
    """A buffer entry whose samples are stored: written in the same transaction as the samples."""

    entry_id = models.CharField(max_length=40, primary_key=True)
    applied_at = models.DateTimeField(auto_now_add=True)
