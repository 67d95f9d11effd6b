"""OpenAPI descriptions of the telemetry endpoints (drf-spectacular)."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers


class SourceTokenScheme(OpenApiAuthenticationExtension):
    target_class = "telemetry.api.auth.SourceTokenAuthentication"
    match_subclasses = True  # the ingest views' variant (telemetry.api.views.IngestTokenAuthentication)
    name = "sourceToken"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "A telemetry source token, fdc_…"}


ERROR = inline_serializer(
    "Error",
    {
        "code": serializers.CharField(),
        "message": serializers.CharField(),
        "errors": serializers.ListField(
            child=inline_serializer("ErrorItem", {
                "item": serializers.CharField(required=False, help_text="JSON path or query parameter"),
                "line": serializers.IntegerField(required=False, help_text="line of an exposition text"),
                "reason": serializers.CharField(),
            }),
            required=False,
        ),
    },
)
INGEST_REPORT = inline_serializer(
    "IngestReport",
    {
        "accepted": serializers.IntegerField(),
        "entry_id": serializers.CharField(allow_null=True),
        "unknown_entities": serializers.DictField(child=serializers.IntegerField()),
        "unknown_metrics": serializers.DictField(child=serializers.IntegerField()),
        "skipped_not_supported": serializers.IntegerField(),
        "duplicates_folded": serializers.IntegerField(),
    },
)
INGEST_RESPONSES = {
    202: INGEST_REPORT,
    400: ERROR,
    401: ERROR,
    413: ERROR,
    415: ERROR,
    429: OpenApiResponse(description="Rate limit of this source token exceeded"),
    503: OpenApiResponse(ERROR, description="Buffer unavailable; nothing accepted; retry after Retry-After"),
}
JSON_BATCH = inline_serializer(
    "SampleBatch",
    {
        "gpus": serializers.DictField(
            required=False,
            help_text="GPU samples as columns of equal length: uuid (or hostname and gpu), timestamp (a list, or "
                      "one value for every row) and one list per DCGM field (null: not sent for that GPU). Row i "
                      "is one GPU at one time. Bad values are named by index, e.g. gpus.DCGM_FI_DEV_GPU_TEMP[17].",
        ),
        "samples": serializers.ListField(required=False, child=inline_serializer("Sample", {
            "metric": serializers.CharField(),
            "timestamp": serializers.CharField(help_text="epoch seconds or ISO 8601 with a zone"),
            "value": serializers.FloatField(),
            "uuid": serializers.CharField(required=False),
            "hostname": serializers.CharField(required=False),
            "gpu": serializers.IntegerField(required=False),
            "cooling_unit": serializers.CharField(required=False),
            "point": serializers.CharField(required=False),
        })),
    },
)

samples_schema = extend_schema(request=JSON_BATCH, responses=INGEST_RESPONSES, tags=["telemetry ingest"])
prometheus_schema = extend_schema(
    request={"text/plain": OpenApiTypes.STR, "application/openmetrics-text": OpenApiTypes.STR},
    responses=INGEST_RESPONSES, tags=["telemetry ingest"],
)
SERIES = inline_serializer(
    "SeriesResponse",
    {
        "site": serializers.CharField(),
        "start": serializers.FloatField(),
        "end": serializers.FloatField(),
        "bucket_seconds": serializers.IntegerField(),
        "series": serializers.ListField(child=inline_serializer("SeriesData", {
            "entity": serializers.DictField(),
            "metric": serializers.CharField(),
            "unit": serializers.CharField(),
            "t": serializers.ListField(child=serializers.FloatField()),
            "v": serializers.ListField(child=serializers.FloatField()),
        })),
    },
)
LATEST = inline_serializer(
    "LatestResponse",
    {
        "site": serializers.CharField(),
        "gpus": serializers.DictField(help_text="columns: uuid, hostname, gpu, time and one per metric"),
        "points": serializers.ListField(child=serializers.DictField()),
        "facility": serializers.DictField(help_text="derived KPIs: IT/cooling/facility kW, PUE, TFLOPS, TFLOPS/kW…"),
    },
)
