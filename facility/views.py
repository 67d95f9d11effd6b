"""Inventory pages."""

from django.db.models import Count, Prefetch
from django.views.generic import TemplateView

from facility.mixins import RoleRequiredMixin
from facility.models import CoolingUnit, Hall, Rack, Setpoint, Site


class OverviewView(RoleRequiredMixin, TemplateView):
    """Every site at a glance: halls with their floor map of racks, cooling plant and setpoint envelopes."""

    template_name = "facility/overview.html"
    permission_required = "facility.view_site"

    def get_context_data(self, **kwargs):
        units = CoolingUnit.objects.order_by("kind", "name").prefetch_related(
            Prefetch("setpoints", queryset=Setpoint.objects.order_by("name"))
        )
        racks = Rack.objects.annotate(node_count=Count("nodes", distinct=True),
                                      gpu_count=Count("nodes__gpus", distinct=True))
        halls = Hall.objects.annotate(
            rack_count=Count("racks", distinct=True),
            node_count=Count("racks__nodes", distinct=True),
            gpu_count=Count("racks__nodes__gpus", distinct=True),
        ).prefetch_related(Prefetch("racks", queryset=racks), Prefetch("cooling_units", queryset=units))
        sites = Site.objects.prefetch_related(
            Prefetch("halls", queryset=halls),
            Prefetch("cooling_units", queryset=units.filter(hall__isnull=True), to_attr="central_plant"),
        )
        return super().get_context_data(sites=sites, **kwargs)
