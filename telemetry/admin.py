"""Admin for telemetry sources (tokens shown once on creation, revocable) and unmapped entities."""

from django.contrib import admin, messages
from django.utils import timezone

from telemetry.models import ScrapeTarget, Series, Source, UnknownEntity


@admin.register(Source)
class SourceAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "site", "token_prefix", "created_at", "last_used_at", "revoked_at")
    list_filter = ("kind", "site", ("revoked_at", admin.EmptyFieldListFilter))
    search_fields = ("name", "token_prefix")
    readonly_fields = ("token_prefix", "created_by", "created_at", "last_used_at", "revoked_at")
    actions = ["revoke", "reissue"]

    def save_model(self, request, obj, form, change):
        token = None
        if not change:
            obj.created_by = request.user
            token = obj.issue_token()
        super().save_model(request, obj, form, change)
        if token:
            messages.warning(request, f"Token for {obj.name} (shown only now): {token}")

    # Actions with no `permissions` are offered to whoever may view the list: every role.
    @admin.action(description="Revoke the selected sources' tokens", permissions=["change"])
    def revoke(self, request, queryset):
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        messages.success(request, f"Revoked {count} token(s).")

    @admin.action(description="Issue new tokens (the old ones stop working)", permissions=["change"])
    def reissue(self, request, queryset):
        for source in queryset:
            token = source.issue_token()
            source.revoked_at = None
            source.save()
            messages.warning(request, f"New token for {source.name} (shown only now): {token}")


@admin.register(UnknownEntity)
class UnknownEntityAdmin(admin.ModelAdmin):
    """What sources report that the inventory lacks: add the GPU or unit (same UUID or name) to map it."""

    list_display = ("kind", "key", "source", "samples", "first_seen", "last_seen")
    list_filter = ("kind", "source")
    search_fields = ("key",)
    readonly_fields = ("source", "kind", "key", "samples", "first_seen", "last_seen")

    def has_add_permission(self, request):
        return False


@admin.register(Series)
class SeriesAdmin(admin.ModelAdmin):
    list_display = ("__str__", "site", "cooling_unit", "point", "metric")
    list_filter = ("site", "metric")
    search_fields = ("metric", "cooling_unit__name", "point")
    list_select_related = ("site", "cooling_unit")


@admin.register(ScrapeTarget)
class ScrapeTargetAdmin(admin.ModelAdmin):
    list_display = ("url", "kind", "source", "interval_seconds", "enabled", "last_scraped_at", "last_status",
                    "consecutive_failures")
    list_filter = ("kind", "enabled", "source")
    search_fields = ("url", "cooling_unit")
    readonly_fields = ("last_scraped_at", "last_status", "consecutive_failures")
