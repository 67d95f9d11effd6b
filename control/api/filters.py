"""List filters of the control API (django-filter): `?state=`, `?site=<slug>`, `?after=`/`?before=`, …"""

import django_filters as filters

from control.models import AuditAction, AuditEntry, PolicyRun, SetpointChange


class SetpointChangeFilter(filters.FilterSet):
    site = filters.CharFilter(field_name="setpoint__cooling_unit__site__slug", help_text="Site slug")
    cooling_unit = filters.NumberFilter(field_name="setpoint__cooling_unit", help_text="Cooling unit id")
    after = filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte", help_text="Proposed at or after")
    before = filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt", help_text="Proposed before")

    class Meta:
        model = SetpointChange
        fields = ["state", "setpoint", "origin", "policy", "site", "cooling_unit", "after", "before"]


class AuditEntryFilter(filters.FilterSet):
    action = filters.MultipleChoiceFilter(choices=AuditAction.choices, help_text="Repeat for several")
    site = filters.CharFilter(field_name="site__slug", help_text="Site slug")
    actor = filters.CharFilter(field_name="actor_label", help_text="User name, or policy/system label")
    after = filters.IsoDateTimeFilter(field_name="at", lookup_expr="gte")
    before = filters.IsoDateTimeFilter(field_name="at", lookup_expr="lt")

    class Meta:
        model = AuditEntry
        fields = ["action", "change", "setpoint", "site", "actor", "after", "before"]


class PolicyRunFilter(filters.FilterSet):
    site = filters.CharFilter(field_name="site__slug", help_text="Site slug")

    class Meta:
        model = PolicyRun
        fields = ["site", "policy", "enabled"]
