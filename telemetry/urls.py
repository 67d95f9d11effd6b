"""Operator pages of the telemetry app (mounted at the site root)."""

from django.urls import path

from telemetry import views

app_name = "telemetry"


def _detail(prefix: str, converter: str, view, name: str) -> list:
    """A detail page with its JSON window (`data`) and CSV export, all from one chart spec."""
    return [
        path(f"{prefix}/<{converter}>/", view.as_view(), name=name),
        path(f"{prefix}/<{converter}>/data", view.as_view(), {"fmt": "data"}, name=f"{name}-data"),
        path(f"{prefix}/<{converter}>/export.csv", view.as_view(), {"fmt": "csv"}, name=f"{name}-csv"),
    ]


urlpatterns = [
    path("live/", views.LiveOverviewView.as_view(), name="live"),
    path("live/kpis", views.KpiHistoryView.as_view(), name="kpi-history"),
    path("loop/", views.LoopView.as_view(), name="loop"),
    path("loop/data", views.LoopDataView.as_view(), name="loop-data"),
    *_detail("gpus", "str:uuid", views.GpuDetailView, "gpu"),
    *_detail("nodes", "str:hostname", views.NodeDetailView, "node"),
    *_detail("racks", "int:pk", views.RackDetailView, "rack"),
    *_detail("cooling-units", "int:pk", views.CoolingUnitDetailView, "cooling-unit"),
]
