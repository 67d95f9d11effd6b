"""Django admin for model versions (activate one), forecasts and the serving workers' figures (read-only)."""

from django.contrib import admin, messages

from inference.checkpoint import CheckpointError
from inference.models import Forecast, InferenceStats, ModelVersion


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "site", "active", "created_at", "data_start", "data_end")
    list_filter = ("kind", "active", "site")
    search_fields = ("name", "checksum_sha256")
    readonly_fields = ("name", "kind", "site", "config", "features", "data_start", "data_end", "metrics",
                       "training_curves", "training_seconds", "checkpoint_path", "checksum_sha256", "created_at",
                       "active")
    actions = ["activate"]

    def has_add_permission(self, request):
        return False  # versions come from `manage.py inference train`

    @admin.action(description="Activate (the serving worker picks it up on its next step)", permissions=["change"])
    def activate(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Choose exactly one version to activate.", messages.ERROR)
            return
        version = queryset.get()
        try:
            version.load()  # as `manage.py inference activate`: the worker would serve nothing from a bad file
        except (CheckpointError, ValueError, OSError) as exc:
            self.message_user(request, f"{version} was not activated: {exc}", messages.ERROR)
            return
        version.activate()
        self.message_user(request, f"{version} is now the active {version.get_kind_display()}.")


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Forecast)
class ForecastAdmin(ReadOnlyAdmin):
    list_display = ("gpu", "made_at", "horizon_s", "gpu_temperature_celsius_p50", "sm_clock_megahertz_p50",
                    "power_watts_p50", "throttle_probability")
    list_filter = ("horizon_s",)
    list_select_related = ("gpu__node",)
    date_hierarchy = "made_at"
    search_fields = ("gpu__uuid", "gpu__node__hostname")
    show_full_result_count = False


@admin.register(InferenceStats)
class InferenceStatsAdmin(ReadOnlyAdmin):
    list_display = ("worker", "model_version", "updated_at", "streams", "cache_bytes", "step_seconds",
                    "tokens_per_second", "forecasts_written")
