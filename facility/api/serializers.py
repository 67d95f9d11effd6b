import copy

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers

from facility.models import GPU, CoolingLoop, CoolingUnit, Hall, Node, Rack, Setpoint, Site
from facility.twin.state import server_fan_range_problem


class SiteSerializer(serializers.ModelSerializer):
    class Meta:
        model = Site
        fields = ("id", "slug", "name", "climate", "description", "updated_at")


class HallSerializer(serializers.ModelSerializer):
    class Meta:
        model = Hall
        fields = ("id", "site", "name", "cooling_type", "contained", "updated_at")


class CoolingLoopSerializer(serializers.ModelSerializer):
    class Meta:
        model = CoolingLoop
        fields = ("id", "site", "name", "kind", "updated_at")


class CoolingUnitSerializer(serializers.ModelSerializer):
    def validate(self, attrs):
        """The model's own rules (`CoolingUnit.clean`: the hall is the site's; server fans, one per hall), as the
        admin applies them."""
        unit = copy.copy(self.instance) if self.instance is not None else CoolingUnit()
        for name, value in attrs.items():
            setattr(unit, name, value)
        try:
            unit.clean()
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.message_dict) from None
        return attrs

    class Meta:
        model = CoolingUnit
        fields = ("id", "site", "hall", "name", "kind", "supply_loop", "return_loop", "capacity_kw", "updated_at")


class RackSerializer(serializers.ModelSerializer):
    class Meta:
        model = Rack
        fields = ("id", "hall", "name", "row", "position", "cooled_by", "updated_at")


class NodeSerializer(serializers.ModelSerializer):
    class Meta:
        model = Node
        fields = ("id", "rack", "hostname", "slot", "model", "updated_at")


class GPUSerializer(serializers.ModelSerializer):
    class Meta:
        model = GPU
        fields = ("id", "node", "index", "uuid", "model", "pci_bus_id", "updated_at")


class SetpointSerializer(serializers.ModelSerializer):
    class Meta:
        model = Setpoint
        fields = (
            "id", "cooling_unit", "name", "unit", "value", "allowable_min", "allowable_max", "max_step",
            "max_rate_per_minute", "min_dwell_seconds", "updated_at",
        )
        # The value is the plant's read-back: it changes through setpoint changes, never by a direct write.
        read_only_fields = ("value",)

    def validate_max_step(self, value):
        if not value > 0:
            raise serializers.ValidationError("Must be above 0 (a step of 0 would allow no change at all).")
        return value

    def validate_max_rate_per_minute(self, value):
        if value is not None and not value > 0:
            raise serializers.ValidationError("Must be above 0, or empty for no rate limit.")
        return value

    def validate(self, attrs):
        lo = attrs.get("allowable_min", getattr(self.instance, "allowable_min", None))
        hi = attrs.get("allowable_max", getattr(self.instance, "allowable_max", None))
        if lo is not None and hi is not None and lo > hi:
            raise serializers.ValidationError({"allowable_max": "Must not be below allowable_min."})
        unit = attrs.get("cooling_unit", getattr(self.instance, "cooling_unit", None))
        name = attrs.get("name", getattr(self.instance, "name", None))
        measure = attrs.get("unit", getattr(self.instance, "unit", None))
        if unit is not None and lo is not None and hi is not None and (
                problem := server_fan_range_problem(unit.kind, name, measure, lo, hi)):
            raise serializers.ValidationError({"allowable_min": problem})
        return attrs

    def create(self, validated_data):
        validated_data.setdefault(
            "value", (validated_data["allowable_min"] + validated_data["allowable_max"]) / 2
        )
        return super().create(validated_data)
