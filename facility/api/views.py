"""Inventory API: thin viewsets (queryset, serializer, filters) over the facility models."""

from rest_framework import viewsets

from facility.api import serializers
from facility.models import GPU, CoolingLoop, CoolingUnit, Hall, Node, Rack, Setpoint, Site


class SiteViewSet(viewsets.ModelViewSet):
    queryset = Site.objects.all()
    serializer_class = serializers.SiteSerializer
    lookup_field = "slug"


class HallViewSet(viewsets.ModelViewSet):
    queryset = Hall.objects.all()
    serializer_class = serializers.HallSerializer


class CoolingLoopViewSet(viewsets.ModelViewSet):
    queryset = CoolingLoop.objects.all()
    serializer_class = serializers.CoolingLoopSerializer


class CoolingUnitViewSet(viewsets.ModelViewSet):
    queryset = CoolingUnit.objects.all()
    serializer_class = serializers.CoolingUnitSerializer


class RackViewSet(viewsets.ModelViewSet):
    queryset = Rack.objects.prefetch_related("cooled_by")
    serializer_class = serializers.RackSerializer


class NodeViewSet(viewsets.ModelViewSet):
    queryset = Node.objects.all()
    serializer_class = serializers.NodeSerializer


class GPUViewSet(viewsets.ModelViewSet):
    queryset = GPU.objects.all()
    serializer_class = serializers.GPUSerializer


class SetpointViewSet(viewsets.ModelViewSet):
    queryset = Setpoint.objects.all()
    serializer_class = serializers.SetpointSerializer
