"""Inference API: the newest forecasts per GPU and horizon, and the model versions."""

from __future__ import annotations

from django.db.models import OuterRef, Subquery
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, viewsets
from rest_framework.permissions import BasePermission
from rest_framework.response import Response
from rest_framework.views import APIView

from facility.models import GPU, Site
from inference.api.serializers import ForecastListSerializer, ForecastSerializer, ModelVersionSerializer
from inference.models import Forecast, ModelVersion
from telemetry.api import schema
from telemetry.api.views import error_body


class CanReadForecasts(BasePermission):
    def has_permission(self, request, view):
        return bool(request.user and request.user.has_perm("inference.view_forecast"))


class _CSV(serializers.CharField):
    def to_internal_value(self, data):
        return [part.strip() for part in super().to_internal_value(data).split(",") if part.strip()]


class ForecastQuery(serializers.Serializer):
    site = serializers.SlugField(required=False, help_text="Site slug (needed when there is more than one site)")
    gpus = _CSV(required=False, help_text="GPU UUIDs, or hostname/gpu-index pairs like a-r01-n1/3; default all")
    horizon = serializers.IntegerField(required=False, min_value=1, help_text="Horizon in seconds (10, 60, 300)")

    def validate(self, attrs):
        slug = attrs.get("site")
        sites = Site.objects.filter(slug=slug) if slug else Site.objects.all()
        if len(sites[:2]) != 1:
            raise serializers.ValidationError({"site": "name one site" if not slug else f"no site {slug!r}"})
        attrs["site"] = sites[0]
        return attrs


class ForecastView(APIView):
    """The newest forecast of each GPU (all of the site's, or those named) for each horizon (or the one named)."""

    permission_classes = [CanReadForecasts]

    def handle_exception(self, exc):
        if isinstance(exc, serializers.ValidationError):
            errors = [{"item": field, "reason": " ".join(map(str, msgs)) if isinstance(msgs, list) else str(msgs)}
                      for field, msgs in exc.detail.items()]
            return Response(error_body("invalid_query", "the query parameters are not valid", errors), status=400)
        return super().handle_exception(exc)

    @extend_schema(parameters=[ForecastQuery], responses={200: ForecastListSerializer, 400: schema.ERROR},
                   tags=["inference"])
    def get(self, request):
        q = ForecastQuery(data=request.query_params)
        q.is_valid(raise_exception=True)
        p = q.validated_data
        site = p["site"]
        gpus = GPU.objects.filter(node__rack__hall__site=site).select_related("node")
        if p.get("gpus"):
            by_uuid = {g.uuid: g for g in gpus}
            by_host = {f"{g.node.hostname}/{g.index}": g for g in gpus}
            missing = [k for k in p["gpus"] if k not in by_uuid and k not in by_host]
            if missing:
                raise serializers.ValidationError({"gpus": f"not in {site.slug}: {', '.join(missing[:10])}"})
            gpu_ids = [(by_uuid.get(k) or by_host[k]).pk for k in p["gpus"]]
        else:
            gpu_ids = [g.pk for g in gpus]
        rows = (Forecast.objects.filter(pk__in=newest_forecast_ids(gpu_ids, p.get("horizon")))
                .select_related("gpu__node", "model_version")
                .order_by("gpu__node__hostname", "gpu__index", "horizon_s"))
        return Response({"site": site.slug, "forecasts": ForecastSerializer(rows, many=True).data})


def newest_forecast_ids(gpu_ids: list[int], horizon: int | None = None) -> list[int]:
    """The newest forecast of each GPU for each horizon: one index probe per (GPU, horizon) on the unique
    (gpu, horizon_s, made_at) index, instead of reading the day of forecasts each GPU keeps. The horizons are
    those of the versions that made forecasts (a few), or the one asked for."""
    if horizon is not None:
        horizons = {int(horizon)}
    else:
        horizons = {round(h) for config in ModelVersion.objects.values_list("config", flat=True)
                    for h in (config or {}).get("horizons_s", ())}
    ids: list[int] = []
    for h in sorted(horizons):
        newest = (Forecast.objects.filter(gpu=OuterRef("pk"), horizon_s=h).order_by("-made_at").values("pk")[:1])
        ids += [pk for pk in GPU.objects.filter(pk__in=gpu_ids).annotate(newest=Subquery(newest))
                .values_list("newest", flat=True) if pk is not None]
    return ids


@extend_schema(tags=["inference"])
class ModelVersionViewSet(viewsets.ReadOnlyModelViewSet):
    """Trained forecaster versions with their held-out metrics (the active one is what the worker serves)."""

    queryset = ModelVersion.objects.select_related("site")
    serializer_class = ModelVersionSerializer
    filterset_fields = ["kind", "active", "name"]
    ordering_fields = ["id", "created_at", "name"]
