"""Telemetry API: ingest endpoints for sources, query endpoints for people and integrations."""

from __future__ import annotations

import json
import math
import time
from datetime import datetime

from django.conf import settings
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import authentication, exceptions, parsers, serializers, status
from rest_framework.exceptions import ParseError as DRFParseError
from rest_framework.permissions import BasePermission
from rest_framework.response import Response
from rest_framework.views import APIView

from facility.models import GPU, Site
from telemetry import query
from telemetry.api import schema
from telemetry.api.auth import IsTelemetrySource, SourceRateThrottle, SourceTokenAuthentication
from telemetry.buffer import BufferUnavailable
from telemetry.catalogue import Equipment, resolve
from telemetry.ingest import BatchRejected, ingest
from telemetry.models import Series, Source
from telemetry.parsers.json_batch import parse_json_batch
from telemetry.parsers.prometheus import parse_exposition
from telemetry.parsers.redfish import parse_redfish
from telemetry.schema import GPU_COLUMNS

try:
    import orjson
except ImportError:  # optional: the standard library parses the same bodies, a few times slower
    orjson = None

MAX_REPORTED_ERRORS = 100


class PlainTextParser(parsers.BaseParser):
    media_type = "text/plain"

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return stream.read().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DRFParseError(f"body is not UTF-8 text (byte {exc.start})") from None


class OpenMetricsParser(PlainTextParser):
    media_type = "application/openmetrics-text"


class BatchJSONParser(parsers.BaseParser):
    """`application/json` for ingest bodies: orjson where installed (several times faster on the large columnar
    bodies), else the standard library. NaN/Infinity literals are not JSON; a columnar (`gpus`) body may still
    carry them so that the batch check names each one (`gpus.DCGM_FI_DEV_GPU_TEMP[17]`); any other body is
    refused for them as DRF's own JSON parser refuses them."""

    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None):
        body = stream.read()
        if orjson is not None:
            try:
                return orjson.loads(body)
            except orjson.JSONDecodeError:
                pass  # not JSON, or JSON with NaN/Infinity: the standard parser tells which, and where
        constants = []

        def constant(name):
            constants.append(name)
            return float(name)

        try:
            doc = json.loads(body, parse_constant=constant)
        except (ValueError, UnicodeDecodeError) as exc:
            raise DRFParseError(f"JSON parse error - {exc}") from None
        if constants and not (isinstance(doc, dict) and "gpus" in doc and "samples" not in doc):
            raise DRFParseError(f"JSON parse error - Out of range float values are not JSON compliant: {constants[0]}")
        return doc


def error_body(code: str, message: str, errors: list[dict] | None = None) -> dict:
    """The one shape of every error this API returns."""
    body = {"code": code, "message": message}
    if errors is not None:
        body["errors"] = errors[:MAX_REPORTED_ERRORS]
        if len(errors) > MAX_REPORTED_ERRORS:
            body["errors_truncated"] = len(errors) - MAX_REPORTED_ERRORS
    return body


class IngestTokenAuthentication(SourceTokenAuthentication):
    """The source-token check, recording `last_used_at` at most every LAST_USED_EVERY seconds per source (in
    each process) rather than on every request: that UPDATE and its commit were most of the time of an
    ingest request once batches are columnar (bench/ingest.py). Revocation still takes effect at once."""

    LAST_USED_EVERY = 30.0
    _written: dict[int, float] = {}

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1").split()
        if not header or header[0] != self.keyword:
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Authorization header must be 'Bearer <token>'.")
        source = Source.authenticate(header[1])
        if source is None:
            raise exceptions.AuthenticationFailed("Unknown or revoked source token.")
        now = time.monotonic()
        if now - self._written.get(source.pk, -math.inf) >= self.LAST_USED_EVERY:
            Source.objects.filter(pk=source.pk).update(last_used_at=timezone.now())
            self._written[source.pk] = now
        return (None, source)


class IngestView(APIView):
    """Common path: size check, parse, ingest, answer 202 / 400 / 413 / 503."""

    authentication_classes = [IngestTokenAuthentication]
    permission_classes = [IsTelemetrySource]
    throttle_classes = [SourceRateThrottle]

    def parse(self, request):
        raise NotImplementedError

    def post(self, request):
        length = int(request.headers.get("Content-Length") or 0)
        if length > settings.TELEMETRY_MAX_BODY_BYTES:
            return Response(
                error_body("payload_too_large", f"body of {length} bytes exceeds {settings.TELEMETRY_MAX_BODY_BYTES}"),
                status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
            )
        parsed = self.parse(request)
        try:
            report = ingest(request.auth, parsed)
        except BatchRejected as exc:
            errors = [
                {"line": e.line, "reason": e.reason, "text": e.text} if e.line is not None
                else {"item": e.path, "reason": e.reason}
                for e in exc.errors[:MAX_REPORTED_ERRORS]
            ]
            return Response(
                error_body("invalid_batch", f"{len(exc.errors)} problem(s); nothing in this batch was accepted",
                           errors) | ({"errors_truncated": len(exc.errors) - len(errors)}
                                      if len(exc.errors) > len(errors) else {}),
                status=status.HTTP_400_BAD_REQUEST,
            )
        except BufferUnavailable as exc:
            response = Response(error_body(exc.code, exc.message), status=status.HTTP_503_SERVICE_UNAVAILABLE)
            response["Retry-After"] = "5"
            return response
        return Response(report.as_dict(), status=status.HTTP_202_ACCEPTED)


class SamplesIngestView(IngestView):
    """POST a JSON batch of samples, in rows or in GPU columns (see telemetry/parsers/json_batch.py)."""

    parser_classes = [BatchJSONParser]

    @schema.samples_schema
    def post(self, request):
        return super().post(request)

    def parse(self, request):
        return parse_json_batch(request.data)


class PrometheusIngestView(IngestView):
    """POST a dcgm-exporter / Prometheus text exposition (or OpenMetrics) scrape."""

    parser_classes = [PlainTextParser, OpenMetricsParser]

    @schema.prometheus_schema
    def post(self, request):
        return super().post(request)

    def parse(self, request):
        text = request.data if isinstance(request.data, str) else ""
        return parse_exposition(text, default_timestamp=time.time())


class RedfishIngestView(IngestView):
    """POST Redfish JSON for one cooling unit (`?cooling_unit=NAME`): CoolingUnit, CoolantConnector, Pump, Sensor."""

    parser_classes = [parsers.JSONParser]

    @extend_schema(
        request=OpenApiTypes.OBJECT, responses=schema.INGEST_RESPONSES, tags=["telemetry ingest"],
        parameters=[OpenApiParameter("cooling_unit", str, description="Inventory name of the unit")],
    )
    def post(self, request):
        return super().post(request)

    def parse(self, request):
        unit = request.query_params.get("cooling_unit") or None
        data = request.data
        if not isinstance(data, dict | list):
            raise DRFParseError("expected a Redfish resource object or a list of them")
        return parse_redfish(data, unit_name=unit, default_timestamp=time.time())


# --- Queries ----------------------------------------------------------------------------------------------



class CanReadTelemetry(BasePermission):
    def has_permission(self, request, view):
        return bool(request.user and request.user.has_perm("telemetry.view_gpusample"))


@extend_schema_field(OpenApiTypes.STR)
class _Instant(serializers.Field):
    """Epoch seconds or ISO 8601 with a zone."""

    def to_internal_value(self, data):
        try:
            value = float(data)
        except (TypeError, ValueError):
            try:
                parsed = datetime.fromisoformat(str(data).replace("Z", "+00:00"))
            except ValueError:
                raise serializers.ValidationError("epoch seconds or ISO 8601 with a zone") from None
            if parsed.tzinfo is None:
                raise serializers.ValidationError("ISO 8601 time needs a zone (e.g. Z)") from None
            value = parsed.timestamp()
        if not 0 <= value < 4e9:
            raise serializers.ValidationError("time out of range")
        return value


class _CSV(serializers.CharField):
    def to_internal_value(self, data):
        return [part.strip() for part in super().to_internal_value(data).split(",") if part.strip()]


class SeriesQuery(serializers.Serializer):
    site = serializers.SlugField(required=False)
    metrics = _CSV()
    gpus = _CSV(required=False, help_text="GPU UUIDs, or hostname/gpu-index pairs like a-r01-n1/3")
    cooling_units = _CSV(required=False)
    start = _Instant(required=False)
    end = _Instant(required=False)
    max_points = serializers.IntegerField(required=False, min_value=2, max_value=10_000, default=500)

    def validate_metrics(self, names):
        unknown = [n for n in names if resolve(n) is None]
        if unknown:
            raise serializers.ValidationError(f"unknown metric(s): {', '.join(unknown)}")
        return [resolve(n).name for n in names]

    def validate(self, attrs):
        end = attrs.get("end") or time.time()
        start = attrs.get("start") or end - 900
        if start >= end:
            raise serializers.ValidationError({"start": "must be before end"})
        attrs["start"], attrs["end"] = start, end
        attrs["site"] = _site(attrs.get("site"))
        return attrs


def _site(slug: str | None) -> Site:
    sites = Site.objects.filter(slug=slug) if slug else Site.objects.all()
    if len(sites[:2]) != 1:
        raise serializers.ValidationError({"site": "name one site" if not slug else f"no site {slug!r}"})
    return sites[0]


class QueryView(APIView):
    permission_classes = [CanReadTelemetry]

    def handle_exception(self, exc):
        if isinstance(exc, serializers.ValidationError):
            errors = [{"item": field, "reason": " ".join(map(str, msgs)) if isinstance(msgs, list) else str(msgs)}
                      for field, msgs in exc.detail.items()]
            return Response(error_body("invalid_query", "the query parameters are not valid", errors), status=400)
        return super().handle_exception(exc)


class SeriesView(QueryView):
    """Series of GPUs and cooling points over a time range, at most `max_points` per series (averaged buckets)."""

    @extend_schema(parameters=[SeriesQuery], responses={200: schema.SERIES, 400: schema.ERROR}, tags=["telemetry"])
    def get(self, request):
        q = SeriesQuery(data=request.query_params)
        q.is_valid(raise_exception=True)
        p = q.validated_data
        site, metrics = p["site"], p["metrics"]
        gpu_metrics = [m for m in metrics if m in GPU_COLUMNS]
        point_metrics = [m for m in metrics if resolve(m).equipment is not Equipment.GPU]
        gpus = _gpus(site, p.get("gpus", []))
        series = Series.objects.filter(site=site, metric__in=point_metrics).select_related("cooling_unit")
        if p.get("cooling_units"):
            series = series.filter(cooling_unit__name__in=p["cooling_units"])
        data = [
            *query.gpu_series(gpus, gpu_metrics, p["start"], p["end"], p["max_points"]),
            *query.point_series(list(series), p["start"], p["end"], p["max_points"]),
        ]
        return Response({
            "site": site.slug, "start": p["start"], "end": p["end"],
            "bucket_seconds": query.bucket_seconds(p["start"], p["end"], p["max_points"]),
            "series": [s.as_dict() for s in data],
        })


def _gpus(site: Site, keys: list[str]) -> list[GPU]:
    gpus = GPU.objects.filter(node__rack__hall__site=site).select_related("node")
    if not keys:
        return []
    by_uuid = {g.uuid: g for g in gpus}
    by_host = {f"{g.node.hostname}/{g.index}": g for g in gpus}
    missing = [k for k in keys if k not in by_uuid and k not in by_host]
    if missing:
        raise serializers.ValidationError({"gpus": f"not in {site.slug}: {', '.join(missing[:10])}"})
    return [by_uuid.get(k) or by_host[k] for k in keys]


class LatestQuery(serializers.Serializer):
    site = serializers.SlugField(required=False)
    metrics = _CSV(required=False)
    within_seconds = serializers.IntegerField(required=False, min_value=1, max_value=86400, default=300)

    def validate_metrics(self, names):
        return SeriesQuery().validate_metrics(names)


class LatestView(QueryView):
    """The newest value of chosen metrics for every GPU and cooling point of a facility, in one call."""

    @extend_schema(parameters=[LatestQuery], responses={200: schema.LATEST, 400: schema.ERROR}, tags=["telemetry"])
    def get(self, request):
        q = LatestQuery(data=request.query_params)
        q.is_valid(raise_exception=True)
        p = q.validated_data
        site = _site(p.get("site"))
        metrics = p.get("metrics") or list(GPU_COLUMNS)
        since = time.time() - p["within_seconds"]
        point_metrics = [m for m in metrics if m not in GPU_COLUMNS] if p.get("metrics") else None
        return Response({
            "site": site.slug,
            "gpus": query.latest_gpu_values(site.pk, [m for m in metrics if m in GPU_COLUMNS], since),
            "points": query.latest_point_values(site.pk, point_metrics, since),
            "facility": {k: (None if v != v else v) for k, v in query.facility_now(site.pk, since).items()},
        })
