"""List filters of the inventory API (django-filter), NetBox-style: `?site=<slug>`, `?hall=<id>`, …

Every list also takes `?ordering=field` (or `-field`) over the view's `ordering_fields`, and a cursor
(`?cursor=`, `?limit=`). A filter value that does not parse is a 400 naming the parameter.
"""

import django_filters as filters

from facility.models import GPU, CoolingLoop, CoolingUnit, Hall, Node, Rack, Setpoint, Site


class SiteFilter(filters.FilterSet):
    class Meta:
        model = Site
        fields = ["slug", "climate"]


class HallFilter(filters.FilterSet):
    site = filters.CharFilter(field_name="site__slug", help_text="Site slug")

    class Meta:
        model = Hall
        fields = ["site", "name", "cooling_type", "contained"]


class CoolingLoopFilter(filters.FilterSet):
    site = filters.CharFilter(field_name="site__slug", help_text="Site slug")

    class Meta:
        model = CoolingLoop
        fields = ["site", "name", "kind"]


class CoolingUnitFilter(filters.FilterSet):
    site = filters.CharFilter(field_name="site__slug", help_text="Site slug")

    class Meta:
        model = CoolingUnit
        fields = ["site", "hall", "name", "kind"]


class RackFilter(filters.FilterSet):
    site = filters.CharFilter(field_name="hall__site__slug", help_text="Site slug")
    cooled_by = filters.NumberFilter(field_name="cooled_by", help_text="Cooling unit id")

    class Meta:
        model = Rack
        fields = ["site", "hall", "row", "name", "cooled_by"]


class NodeFilter(filters.FilterSet):
    site = filters.CharFilter(field_name="rack__hall__site__slug", help_text="Site slug")
    hall = filters.NumberFilter(field_name="rack__hall", help_text="Hall id")

    class Meta:
        model = Node
        fields = ["site", "hall", "rack", "hostname", "model"]


class GPUFilter(filters.FilterSet):
    site = filters.CharFilter(field_name="node__rack__hall__site__slug", help_text="Site slug")
    hall = filters.NumberFilter(field_name="node__rack__hall", help_text="Hall id")
    rack = filters.NumberFilter(field_name="node__rack", help_text="Rack id")
    hostname = filters.CharFilter(field_name="node__hostname", help_text="Node hostname")

    class Meta:
        model = GPU
        fields = ["site", "hall", "rack", "node", "hostname", "index", "uuid", "model"]


class SetpointFilter(filters.FilterSet):
    site = filters.CharFilter(field_name="cooling_unit__site__slug", help_text="Site slug")

    class Meta:
        model = Setpoint
        fields = ["site", "cooling_unit", "name", "unit"]
