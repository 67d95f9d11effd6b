from django.urls import path

from telemetry.api import views

urlpatterns = [
    path("telemetry/samples", views.SamplesIngestView.as_view(), name="telemetry-samples"),
    path("telemetry/prometheus", views.PrometheusIngestView.as_view(), name="telemetry-prometheus"),
    path("telemetry/redfish", views.RedfishIngestView.as_view(), name="telemetry-redfish"),
]

urlpatterns += [
    path("telemetry/series", views.SeriesView.as_view(), name="telemetry-series"),
    path("telemetry/latest", views.LatestView.as_view(), name="telemetry-latest"),
]
