"""Serializers of the inference API: forecasts (wide rows shaped as target → quantiles) and model versions."""

from rest_framework import serializers

from inference.models import Forecast, ModelVersion

TARGETS = ("gpu_temperature_celsius", "sm_clock_megahertz", "power_watts")


class QuantilesSerializer(serializers.Serializer):
    p10 = serializers.FloatField()
    p50 = serializers.FloatField()
    p90 = serializers.FloatField()


class ForecastSerializer(serializers.ModelSerializer):
    """One GPU's forecast for one horizon: the quantiles of each target and the throttling probability."""

    gpu = serializers.CharField(source="gpu.uuid", help_text="GPU UUID")
    hostname = serializers.CharField(source="gpu.node.hostname")
    index = serializers.IntegerField(source="gpu.index", help_text="GPU index on its node (DCGM `gpu`)")
    valid_at = serializers.SerializerMethodField(help_text="made_at + horizon_s")
    model_version = serializers.CharField(source="model_version.name", allow_null=True, default=None)
    gpu_temperature_celsius = serializers.SerializerMethodField()
    sm_clock_megahertz = serializers.SerializerMethodField()
    power_watts = serializers.SerializerMethodField()

    class Meta:
        model = Forecast
        fields = ["gpu", "hostname", "index", "made_at", "horizon_s", "valid_at", "model_version",
                  "gpu_temperature_celsius", "sm_clock_megahertz", "power_watts", "throttle_probability"]

    def get_valid_at(self, obj) -> str:
        from datetime import timedelta

        return (obj.made_at + timedelta(seconds=obj.horizon_s)).isoformat()

    @staticmethod
    def _quantiles(obj, target):
        return {q: getattr(obj, f"{target}_{q}") for q in ("p10", "p50", "p90")}

    def get_gpu_temperature_celsius(self, obj) -> QuantilesSerializer:
        return self._quantiles(obj, "gpu_temperature_celsius")

    def get_sm_clock_megahertz(self, obj) -> QuantilesSerializer:
        return self._quantiles(obj, "sm_clock_megahertz")

    def get_power_watts(self, obj) -> QuantilesSerializer:
        return self._quantiles(obj, "power_watts")


class ForecastListSerializer(serializers.Serializer):
    site = serializers.CharField()
    forecasts = ForecastSerializer(many=True)


class ModelVersionSerializer(serializers.ModelSerializer):
    site = serializers.SlugRelatedField(slug_field="slug", read_only=True)

    class Meta:
        model = ModelVersion
        fields = ["id", "name", "kind", "site", "active", "created_at", "data_start", "data_end", "features",
                  "config", "metrics", "training_curves", "training_seconds", "checksum_sha256"]
        read_only_fields = fields
