"""Django admin for the inventory: search by the names operators use, filter by hall, kind and cooling type.
Also users: admins manage them and their roles, within the roles (see `RoleUserAdmin`)."""

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin

from facility.models import GPU, ApiToken, CoolingLoop, CoolingUnit, Hall, Node, Rack, Setpoint, Site


class HallInline(admin.TabularInline):
    model = Hall
    extra = 0
    fields = ("name", "cooling_type", "contained")


@admin.register(Site)
class SiteAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "climate")
    list_filter = ("climate",)
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    inlines = [HallInline]


@admin.register(Hall)
class HallAdmin(admin.ModelAdmin):
    list_display = ("name", "site", "cooling_type", "contained")
    list_filter = ("site", "cooling_type", "contained")
    search_fields = ("name",)


@admin.register(CoolingLoop)
class CoolingLoopAdmin(admin.ModelAdmin):
    list_display = ("name", "site", "kind")
    list_filter = ("site", "kind")
    search_fields = ("name",)


class SetpointInline(admin.TabularInline):
    model = Setpoint
    extra = 0
    fields = (
        "name", "unit", "value", "allowable_min", "allowable_max", "max_step", "max_rate_per_minute",
        "min_dwell_seconds",
    )
    # The value is the plant's read-back; it moves only through approved setpoint changes.
    readonly_fields = ("value",)


@admin.register(CoolingUnit)
class CoolingUnitAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "site", "hall", "supply_loop", "return_loop", "capacity_kw")
    list_filter = ("site", "kind", "hall", "hall__cooling_type")
    search_fields = ("name",)
    list_select_related = ("site", "hall", "supply_loop", "return_loop")
    inlines = [SetpointInline]


@admin.register(Setpoint)
class SetpointAdmin(admin.ModelAdmin):
    list_display = (
        "__str__", "unit", "value", "allowable_min", "allowable_max", "max_step", "max_rate_per_minute",
        "min_dwell_seconds",
    )
    list_filter = ("cooling_unit__kind", "cooling_unit__hall", "unit")
    search_fields = ("name", "cooling_unit__name")
    list_select_related = ("cooling_unit",)
    readonly_fields = ("value",)
    fieldsets = (
        (None, {"fields": ("cooling_unit", "name", "unit", "value")}),
        ("Envelope", {"fields": ("allowable_min", "allowable_max", "max_step", "max_rate_per_minute",
                                 "min_dwell_seconds")}),
    )

    def save_model(self, request, obj, form, change):
        # A new point starts at the middle of its range until the plant reports a value.
        if obj.value is None:
            obj.value = (obj.allowable_min + obj.allowable_max) / 2
        super().save_model(request, obj, form, change)


class NodeInline(admin.TabularInline):
    model = Node
    extra = 0
    fields = ("hostname", "slot", "model")
    show_change_link = True


@admin.register(Rack)
class RackAdmin(admin.ModelAdmin):
    list_display = ("name", "hall", "row", "position")
    list_filter = ("hall__site", "hall", "hall__cooling_type", "row")
    search_fields = ("name", "nodes__hostname")
    filter_horizontal = ("cooled_by",)
    list_select_related = ("hall",)
    inlines = [NodeInline]


class GPUInline(admin.TabularInline):
    model = GPU
    extra = 0
    fields = ("index", "uuid", "model", "pci_bus_id")


@admin.register(Node)
class NodeAdmin(admin.ModelAdmin):
    list_display = ("hostname", "rack", "slot", "model")
    list_filter = ("rack__hall__site", "rack__hall", "rack__hall__cooling_type", "model")
    search_fields = ("hostname", "gpus__uuid")
    list_select_related = ("rack",)
    inlines = [GPUInline]


@admin.register(GPU)
class GPUAdmin(admin.ModelAdmin):
    list_display = ("__str__", "uuid", "model", "pci_bus_id")
    list_filter = ("node__rack__hall", "node__rack__hall__cooling_type", "model", "index")
    search_fields = ("uuid", "node__hostname", "pci_bus_id")
    list_select_related = ("node",)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Admins see and revoke everyone's tokens; tokens are created by their users (shown to them once)."""

    list_display = ("name", "user", "token_prefix", "created_at", "expires_at", "last_used_at", "revoked_at")
    list_filter = (("revoked_at", admin.EmptyFieldListFilter), "roles")
    search_fields = ("name", "user__username", "token_prefix")
    # revoked_at too: a revoked token stays revoked (its user creates a new one).
    readonly_fields = ("user", "name", "roles", "token_prefix", "created_at", "expires_at", "last_used_at",
                       "revoked_at")
    actions = ["revoke"]

    def has_add_permission(self, request):
        return False

    @admin.action(description="Revoke the selected tokens", permissions=["change"])
    def revoke(self, request, queryset):
        from django.utils import timezone

        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {count} token(s).")


admin.site.unregister(get_user_model())


@admin.register(get_user_model())
class RoleUserAdmin(UserAdmin):
    """Admins give people roles (groups); only a superuser makes a superuser, grants single permissions outside
    the roles, or edits or deletes a superuser (else `auth.change_user` would be a way to every permission)."""

    def get_readonly_fields(self, request, obj=None):
        readonly = super().get_readonly_fields(request, obj)
        return readonly if request.user.is_superuser else (*readonly, "is_superuser", "user_permissions")

    def has_change_permission(self, request, obj=None):
        if obj is not None and obj.is_superuser and not request.user.is_superuser:
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        if obj is not None and obj.is_superuser and not request.user.is_superuser:
            return False
        return super().has_delete_permission(request, obj)
