"""What the inference app stores: trained model versions, the forecasts the serving worker writes, and
the worker's own figures.

Forecasts are wide rows (one per GPU, forecast time and horizon, with the quantiles of every target side
by side) like telemetry's GPU samples: a page or a controller reads one row per GPU and horizon.
"""

from django.db import models, transaction
from django.db.models import Q

from facility.models import GPU, Site

__all__ = ("Forecast", "InferenceStats", "ModelKind", "ModelVersion")


class ModelKind(models.TextChoices):
    FORECASTER = "forecaster", "MLA forecaster"
    MHA_BASELINE = "mha-baseline", "MHA baseline"


class ModelVersion(models.Model):
    """A trained forecaster: its config and features, the data it saw, held-out metrics against
    persistence, its training curves and its checkpoint (with the SHA-256 it must still have when loaded).
    At most one version per kind is active; the serving worker runs the active forecaster."""

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=16, choices=ModelKind.choices, default=ModelKind.FORECASTER)
    site = models.ForeignKey(Site, on_delete=models.SET_NULL, null=True, blank=True, related_name="model_versions",
                             help_text="Site whose telemetry it was trained on.")
    config = models.JSONField(help_text="ForecasterConfig as a dict.")
    features = models.JSONField(help_text="Input feature names, in order.")
    data_start = models.DateTimeField(null=True, blank=True)
    data_end = models.DateTimeField(null=True, blank=True)
    metrics = models.JSONField(default=dict, blank=True,
                               help_text="Held-out metrics per horizon and target (MAE, pinball, coverage; "
                                         "persistence baseline).")
    training_curves = models.JSONField(default=list, blank=True, help_text="Per epoch: train and validation loss.")
    training_seconds = models.FloatField(null=True, blank=True)
    checkpoint_path = models.CharField(max_length=500)
    checksum_sha256 = models.CharField("SHA-256", max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    active = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["kind"], condition=Q(active=True), name="one_active_model_per_kind"),
        ]

    def __str__(self):
        return self.name

    def activate(self):
        """Make this the active version of its kind (the previous one is deactivated in the same transaction)."""
        with transaction.atomic():
            ModelVersion.objects.select_for_update().filter(kind=self.kind, active=True).exclude(pk=self.pk).update(
                active=False)
            self.active = True
            self.save(update_fields=["active"])

    def load(self):
        """The verified model (checksum and config checked; see inference.checkpoint)."""
        from inference.checkpoint import load_checkpoint

        return load_checkpoint(self.checkpoint_path, expected_sha256=self.checksum_sha256, expected_config=self.config)


class Forecast(models.Model):
    """A GPU's forecast made at `made_at` (the time of the newest sample it used) for `horizon_s` later:
    the p10/p50/p90 of temperature, SM clock and power, and the probability the GPU is then throttling."""

    gpu = models.ForeignKey(GPU, on_delete=models.CASCADE, related_name="+")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.SET_NULL, null=True, related_name="+")
    made_at = models.DateTimeField()
    horizon_s = models.PositiveIntegerField()
    gpu_temperature_celsius_p10 = models.FloatField()
    gpu_temperature_celsius_p50 = models.FloatField()
    gpu_temperature_celsius_p90 = models.FloatField()
    sm_clock_megahertz_p10 = models.FloatField()
    sm_clock_megahertz_p50 = models.FloatField()
    sm_clock_megahertz_p90 = models.FloatField()
    power_watts_p10 = models.FloatField()
    power_watts_p50 = models.FloatField()
    power_watts_p90 = models.FloatField()
    throttle_probability = models.FloatField()

    class Meta:
        ordering = ["-made_at", "gpu", "horizon_s"]
        constraints = [
            models.UniqueConstraint(fields=["gpu", "horizon_s", "made_at"], name="forecast_unique_per_time"),
        ]
        indexes = [models.Index(fields=["made_at"], name="forecast_made_at")]

    def __str__(self):
        return f"{self.gpu_id} +{self.horizon_s}s @ {self.made_at:%H:%M:%S}"


class InferenceStats(models.Model):
    """A serving worker's figures after its last step: streams held, cache bytes, step latency, tokens/s."""

    worker = models.CharField(max_length=200, unique=True)
    model_version = models.ForeignKey(ModelVersion, on_delete=models.SET_NULL, null=True, related_name="+")
    updated_at = models.DateTimeField(auto_now=True)
    streams = models.PositiveIntegerField(default=0)
    cache_bytes = models.BigIntegerField(default=0)
    step_seconds = models.FloatField(default=0.0, help_text="Model time of the last step (prefill + decode).")
    tokens = models.PositiveIntegerField(default=0, help_text="Samples consumed by the last step.")
    tokens_per_second = models.FloatField(default=0.0)
    forecasts_written = models.PositiveIntegerField(default=0)
    steps_total = models.BigIntegerField(default=0)
    prefills_total = models.BigIntegerField(default=0)
    evictions_total = models.BigIntegerField(default=0)

    class Meta:
        verbose_name_plural = "inference stats"

    def __str__(self):
        return self.worker
