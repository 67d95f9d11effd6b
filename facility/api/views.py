"""Inventory API: thin viewsets (queryset, serializer, filters) over the facility models."""

from rest_framework import viewsets

from facility.api import filters, serializers
from facility.models import GPU, CoolingLoop, CoolingUnit, Hall, Node, Rack, Setpoint, Site


class SiteViewSet(viewsets.ModelViewSet):
    queryset = Site.objects.all()
    serializer_class = serializers.SiteSerializer
    filterset_class = filters.SiteFilter
    ordering_fields = ["id", "slug", "name"]
    lookup_field = "slug"


class HallViewSet(viewsets.ModelViewSet):
    queryset = Hall.objects.all()
    serializer_class = serializers.HallSerializer
    filterset_class = filters.HallFilter
    ordering_fields = ["id", "name"]


class CoolingLoopViewSet(viewsets.ModelViewSet):
    queryset = CoolingLoop.objects.all()
    serializer_class = serializers.CoolingLoopSerializer
    filterset_class = filters.CoolingLoopFilter
    ordering_fields = ["id", "name"]


class CoolingUnitViewSet(viewsets.ModelViewSet):
    queryset = CoolingUnit.objects.all()
    serializer_class = serializers.CoolingUnitSerializer
    filterset_class = filters.CoolingUnitFilter
    ordering_fields = ["id", "name", "capacity_kw"]


class RackViewSet(viewsets.ModelViewSet):
    queryset = Rack.objects.prefetch_related("cooled_by")
    serializer_class = serializers.RackSerializer
    filterset_class = filters.RackFilter
    ordering_fields = ["id", "name", "row", "position"]


class NodeViewSet(viewsets.ModelViewSet):
    queryset = Node.objects.all()
    serializer_class = serializers.NodeSerializer
    filterset_class = filters.NodeFilter
    ordering_fields = ["id", "hostname", "slot"]


class GPUViewSet(viewsets.ModelViewSet):
    queryset = GPU.objects.all()
    serializer_class = serializers.GPUSerializer
    filterset_class = filters.GPUFilter
    ordering_fields = ["id", "uuid", "index"]


class SetpointViewSet(viewsets.ModelViewSet):
    queryset = Setpoint.objects.all()
    serializer_class = serializers.SetpointSerializer
    filterset_class = filters.SetpointFilter
    ordering_fields = ["id", "name", "value", "updated_at"]
