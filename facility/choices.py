"""Choice sets for the inventory, with stable slug values (they appear in YAML files and the API)."""

from django.db import models


class CoolingType(models.TextChoices):
    AIR = "air", "Air-cooled"
    LIQUID = "liquid", "Direct liquid-cooled"


class CoolingUnitKind(models.TextChoices):
    """Brick classes of plant equipment (CRAH, Chiller, Cooling_Tower...); CDU as in Redfish CoolingUnit."""

    CRAH = "crah", "CRAH (computer room air handler)"
    CRAC = "crac", "CRAC (computer room air conditioner)"
    CDU = "cdu", "CDU (coolant distribution unit)"
    CHILLER = "chiller", "Chiller"
    COOLING_TOWER = "cooling_tower", "Cooling tower"
    DRY_COOLER = "dry_cooler", "Dry cooler"
    PUMP = "pump", "Pump"
    # The fans of a hall's servers as one control point (the BMC fan policy, written through the fleet's
    # management gateway); their power is in the nodes' IT power.
    SERVER_FANS = "server_fans", "Server fans (a hall's BMC fan duty)"


class CoolingLoopKind(models.TextChoices):
    CHILLED_WATER = "chilled_water", "Chilled water"
    CONDENSER_WATER = "condenser_water", "Condenser water"
    FACILITY_WATER = "facility_water", "Facility water system (FWS)"
    TECHNOLOGY_COOLING = "technology_cooling", "Technology cooling system (TCS, CDU secondary)"


class Climate(models.TextChoices):
    """Weather the twin uses for a site (EPW files shipped with the twin)."""

    HOT = "hot", "Hot, dry (Phoenix)"
    MIXED = "mixed", "Mixed, humid (Northern Virginia)"
    COOL = "cool", "Cool, marine (Seattle)"


class SetpointUnit(models.TextChoices):
    CELSIUS = "celsius", "°C"
    RATIO = "ratio", "ratio"
    PERCENT = "percent", "%"
    LITERS_PER_MINUTE = "liters_per_minute", "L/min"
    KILOPASCAL = "kilopascal", "kPa"
    WATT = "watt", "W"
