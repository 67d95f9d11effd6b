from rest_framework import serializers

from control.models import AuditEntry, SetpointChange
from facility.models import Setpoint


class SetpointChangeSerializer(serializers.ModelSerializer):
    setpoint_name = serializers.CharField(source="setpoint.__str__", read_only=True)
    unit = serializers.CharField(source="setpoint.unit", read_only=True)
    proposed_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    decided_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = SetpointChange
        fields = (
            "id", "setpoint", "setpoint_name", "unit", "state", "state_reason", "origin", "from_value", "to_value",
            "requested_value", "proposed_by", "policy", "autonomous", "rollback_of", "rationale",
            "predicted_effect", "telemetry_snapshot", "envelope_verdict", "decided_by", "decision_comment",
            "readback_value", "measured_effect", "watch_outcome", "created_at", "expires_at", "decided_at",
            "written_at", "finished_at", "watch_until",
        )
        read_only_fields = fields


class ProposeSerializer(serializers.Serializer):
    """A setpoint change as an operator asks for it; the envelope may clip or refuse it."""

    setpoint = serializers.PrimaryKeyRelatedField(queryset=Setpoint.objects.all())
    value = serializers.FloatField()
    unit = serializers.CharField(required=False, help_text="The value's unit; must be the setpoint's own.")
    rationale = serializers.CharField(required=False, allow_blank=True, default="")
    predicted_effect = serializers.DictField(required=False, default=dict)
    forecast_hottest_gpu_c = serializers.FloatField(
        required=False, allow_null=True, default=None,
        help_text="Forecast hottest GPU (°C) over the change's horizon, checked by the thermal interlock.")


class DecisionSerializer(serializers.Serializer):
    comment = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)


class ControlErrorSerializer(serializers.Serializer):
    """Every refusal of the control API has this shape."""

    code = serializers.CharField(help_text="Stable slug: permission_denied, two_person_rule, invalid_state, "
                                           "envelope_refused, no_change, expired, not_found, invalid...")
    message = serializers.CharField()
    reasons = serializers.ListField(child=serializers.DictField(), required=False)
    errors = serializers.ListField(child=serializers.DictField(), required=False,
                                   help_text="Each invalid field as {item, reason}.")


class AuditEntrySerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEntry
        fields = ("id", "at", "actor", "actor_label", "action", "change", "setpoint", "site", "subject", "message",
                  "data")
        read_only_fields = fields
