"""Operator pages: the live facility overview, the cooling ↔ performance loop, and detail pages.

Every page needs a signed-in user with `telemetry.view_gpusample` (all roles have it; a viewer sees all of it
read-only). Pages render a skeleton and a chart spec; the browser fills it from the live socket
(`ws/facilities/<slug>/live`, telemetry/consumers.py) and from the JSON window endpoints here, which use the
same query functions (telemetry/query.py) as the REST API and the CSV export.

Setpoint proposals and approvals (the control app) appear on the loop page's setpoint timeline through
`SETPOINT_ANNOTATION_PROVIDERS`: telemetry must not import control, so control appends a provider at
start-up (its AppConfig.ready) — see `setpoint_annotations` for the shape.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
from django.core.cache import cache
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils.text import slugify
from django.views import View
from django.views.generic import TemplateView

from facility.mixins import RoleRequiredMixin
from facility.models import GPU, CoolingUnit, Node, Rack, Site
from telemetry import live, query
from telemetry.api.views import error_body
from telemetry.catalogue import get as metric_info
from telemetry.models import Series
from telemetry.schema import GPU_COLUMNS, METRIC_OF_COLUMN

PERMISSION = "telemetry.view_gpusample"
# Points per trace in any chart window (Grafana's default of 1,000 rows).
MAX_POINTS = 1000
# Named ranges of the time-range picker, in seconds. "live" is a sliding window kept current by the socket.
RANGES = {"live": 300, "15m": 900, "1h": 3600, "24h": 86400}
MAX_SPAN_SECONDS = 31 * 86400
HISTORY_RANGES = [("15m", "15 min"), ("1h", "1 h"), ("24h", "24 h")]

# Providers of setpoint annotations for the loop page's timeline, filled by higher apps at start-up
# (control: proposals, approvals, rejections, applications). Each is called as
# provider(site, start, end) -> list of {"time": epoch s, "unit": cooling-unit name, "setpoint": name,
# "value": proposed or applied value, "state": "proposed"|"approved"|"rejected"|"applied"|..., "text": label,
# "url": optional link}. The chart draws each as a marker on the setpoint's trace with a hover label.
SETPOINT_ANNOTATION_PROVIDERS: list[Callable[[Site, float, float], list[dict]]] = []

SETPOINT_METRICS = [
    "supply_air_temperature_setpoint_celsius", "secondary_supply_temperature_setpoint_celsius",
    "chilled_water_supply_temperature_setpoint_celsius", "leaving_water_temperature_setpoint_celsius",
]

_UNIT_LABEL = {"celsius": "°C", "megahertz": "MHz", "watt": "W", "kilowatt": "kW", "tflops": "TFLOPS",
               "percent": "%", "ratio": "ratio", "liters_per_minute": "L/min", "kilopascal": "kPa"}


def unit_label(metric: str) -> str:
    unit = str(metric_info(metric).unit)
    return _UNIT_LABEL.get(unit, unit)


def setpoint_annotations(site: Site, start: float, end: float) -> list[dict]:
    out = []
    for provider in SETPOINT_ANNOTATION_PROVIDERS:
        out.extend(provider(site, start, end))
    return sorted(out, key=lambda a: a.get("time", 0))


def _site(request) -> Site:
    slug = request.GET.get("site")
    site = Site.objects.filter(slug=slug).first() if slug else Site.objects.order_by("name").first()
    if site is None:
        raise Http404("no such site" if slug else "no facility yet: import one (manage.py facility import)")
    return site


class BadQuery(ValueError):
    """A query parameter a data endpoint cannot use; `QueryErrorsAre400` answers it with HTTP 400 naming it."""

    def __init__(self, item: str, reason: str):
        super().__init__(f"{item}: {reason}")
        self.item, self.reason = item, reason


class QueryErrorsAre400:
    """For the JSON and CSV endpoints (after the role check): a `BadQuery` becomes the API's 400 body."""

    def dispatch(self, request, *args, **kwargs):
        try:
            return super().dispatch(request, *args, **kwargs)
        except BadQuery as exc:
            return JsonResponse(error_body("invalid_query", "the query parameters are not valid",
                                           [{"item": exc.item, "reason": exc.reason}]), status=400)


def _window(request) -> tuple[float, float, str]:
    """The time range asked for: `range` (live, 15m, 1h, 24h) or `start`/`end` in epoch seconds."""
    name = request.GET.get("range") or ("custom" if "start" in request.GET else "live")
    now = time.time()
    if name in RANGES:
        return now - RANGES[name], now, name
    if "start" not in request.GET:
        raise BadQuery("range", f"must be one of {', '.join(RANGES)}, or give start and end in epoch seconds")
    try:
        start, end = float(request.GET["start"]), float(request.GET.get("end") or now)
    except ValueError:
        raise BadQuery("start", "start and end must be epoch seconds") from None
    if not (0 < start < end < 4e9) or end - start > MAX_SPAN_SECONDS:  # 4e9: the year 2096, a datetime still
        raise BadQuery("start", "start must be before end, at most 31 days apart, both epoch seconds")
    return start, end, "custom"


class TelemetryPage(RoleRequiredMixin, TemplateView):
    permission_required = PERMISSION
    page = ""

    def live_context(self, site: Site, **extra) -> dict:
        return {
            "site": site,
            "sites": Site.objects.order_by("name"),
            "detail_ranges": [("live", "Live"), *HISTORY_RANGES, ("custom", "Custom")],
            "history_ranges": HISTORY_RANGES,
            "setpoint_ranges": HISTORY_RANGES,
            "config": {
                "page": self.page,
                "site": site.slug,
                "ws": f"/ws/facilities/{site.slug}/live",
                "latest": reverse("telemetry-latest"),
                "slowdown_c": live.SLOWDOWN_C,
                "warn_c": live.WARN_C,
                "ranges": list(RANGES),
                "max_points": MAX_POINTS,
                "urls": {
                    "gpu": reverse("telemetry:gpu", args=["UUID"]),
                    "node": reverse("telemetry:node", args=["HOST"]),
                    "rack": reverse("telemetry:rack", args=[0]),
                    "unit": reverse("telemetry:cooling-unit", args=[0]),
                },
                **extra,
            },
        }


# --- The facility overview -------------------------------------------------------------------------------

# (KPI key from telemetry.derived.facility_kpis, label, unit, decimals)
KPI_CARDS = [
    ("it_power_kw", "IT power", "kW", 0),
    ("cooling_power_kw", "Cooling power", "kW", 0),
    ("pue", "PUE", "", 3),
    ("tflops", "Throughput", "TFLOPS", 0),
    ("tflops_per_kw", "Efficiency", "TFLOPS/kW", 2),
    ("gpus_throttling", "GPUs throttling", "", 0),
    ("hottest_gpu_temp_c", "Hottest GPU", "°C", 1),
]


class LiveOverviewView(TelemetryPage):
    """KPIs per hall (air and liquid side by side) now and over time, hottest GPUs and the alarm list."""

    template_name = "telemetry/live.html"
    page = "live"

    def get_context_data(self, **kwargs):
        site = _site(self.request)
        units = {u.name: u.pk for u in CoolingUnit.objects.filter(site=site)}
        racks = {r.name: r.pk for r in Rack.objects.filter(hall__site=site)}
        return super().get_context_data(**kwargs, kpi_cards=KPI_CARDS, halls=site.halls.order_by("name"),
                                        **self.live_context(
            site, history=reverse("telemetry:kpi-history") + f"?site={site.slug}", unit_ids=units, rack_ids=racks,
        ))


class KpiHistoryView(QueryErrorsAre400, RoleRequiredMixin, View):
    """Facility KPIs per hall and total over a window, one value per bucket (same definitions as live)."""

    permission_required = PERMISSION

    def get(self, request):
        site = _site(request)
        start, end, name = _window(request)
        try:
            max_points = max(2, min(int(request.GET.get("max_points") or 300), MAX_POINTS))
        except ValueError:
            raise BadQuery("max_points", "must be an integer") from None
        if name == "custom":
            return JsonResponse(kpi_history(site, start, end, max_points))
        # Named ranges: every open page asks for the same window; compute it once per bucket width.
        width = query.bucket_seconds(start, end, max_points)
        key = f"fusedc:kpi-history:{site.pk}:{name}:{max_points}:{int(end // width)}"
        data = cache.get(key)
        if data is None:
            data = kpi_history(site, start, end, max_points)
            cache.set(key, data, timeout=max(width, 5))
        return JsonResponse(data)


def kpi_history(site: Site, start: float, end: float, max_points: int) -> dict:
    inv = live.load_inventory(site.pk)
    gpus = list(GPU.objects.filter(pk__in=inv.gpu_pk).select_related("node"))
    order = {pk: i for i, pk in enumerate(inv.gpu_pk)}
    gpus.sort(key=lambda g: order[g.pk])
    width = query.bucket_seconds(start, end, max_points)
    metrics = [METRIC_OF_COLUMN[c] for c in live.KPI_COLUMNS]
    buckets: dict[float, dict] = {}
    n = len(gpus)
    by_uuid = {g.uuid: i for i, g in enumerate(gpus)}
    for s in query.gpu_series(gpus, metrics, start, end, max_points):
        column = GPU_COLUMNS[s.metric]
        i = by_uuid[s.entity["uuid"]]
        for t, v in zip(s.t, s.v, strict=True):
            slot = buckets.setdefault(t, {"gpu": {c: np.full(n, np.nan) for c in live.KPI_COLUMNS}, "points": []})
            slot["gpu"][column][i] = v
    power_metrics = ["unit_power_kilowatt", "heat_removed_kilowatt", "it_power_kilowatt", "facility_power_kilowatt"]
    series = list(Series.objects.filter(site=site, metric__in=power_metrics).select_related("cooling_unit"))
    for s in query.point_series(series, start, end, max_points):
        for t, v in zip(s.t, s.v, strict=True):
            if t in buckets:
                buckets[t]["points"].append({"cooling_unit": s.entity["cooling_unit"], "metric": s.metric,
                                             "value": v})
    out = {"site": site.slug, "start": start, "end": end, "bucket_seconds": width, "t": [],
           "total": {}, "halls": {h["name"]: {} for h in inv.halls}}
    for t in sorted(buckets):
        slot = buckets[t]
        # Averaged bitmasks mean nothing: throttling history comes from whole-bucket flags only.
        slot["gpu"]["clocks_event_reasons"] = np.where(np.isnan(slot["gpu"]["clocks_event_reasons"]), np.nan,
                                                       np.floor(slot["gpu"]["clocks_event_reasons"]))
        kpis = live.kpis_by_hall(inv, slot["gpu"], slot["points"])
        out["t"].append(t)  # bucket start: live points append after the last one
        for key, value in kpis["total"].items():
            out["total"].setdefault(key, []).append(value)
        for hall, values in kpis["halls"].items():
            for key, value in values.items():
                out["halls"][hall].setdefault(key, []).append(value)
    return out


def kpi_means(site: Site, start: float, end: float, max_points: int = 120) -> dict[str, float | None]:
    """Each facility KPI (kpi_history's totals) averaged over [start, end): the before/after of a change."""
    history = kpi_history(site, start, end, max_points)
    out = {}
    for key, values in history["total"].items():
        finite = [v for v in values if v is not None and math.isfinite(v)]
        out[key] = round(sum(finite) / len(finite), 4) if finite else None
    return out


# --- The loop page ---------------------------------------------------------------------------------------


class LoopView(TelemetryPage):
    """Cooling → performance (temperature vs clocks and TFLOPS, the rack heatmap, air vs liquid efficiency)
    and software → cooling (the setpoint timeline with control's annotations)."""

    template_name = "telemetry/loop.html"
    page = "loop"

    def get_context_data(self, **kwargs):
        site = _site(self.request)
        now = time.time()
        charts = setpoint_charts(site)
        return super().get_context_data(**kwargs, **self.live_context(
            site,
            charts=charts,
            data=reverse("telemetry:loop-data") + f"?site={site.slug}",
            history=reverse("telemetry:kpi-history") + f"?site={site.slug}",
            annotations=setpoint_annotations(site, now - 86400, now),
        ))


def setpoint_charts(site: Site) -> list[dict]:
    series = Series.objects.filter(site=site, metric__in=SETPOINT_METRICS).select_related("cooling_unit")
    series = sorted(series, key=lambda s: (SETPOINT_METRICS.index(s.metric), s.cooling_unit.name
                                           if s.cooling_unit_id else ""))
    return [{
        "id": "setpoints", "title": "Setpoint read-backs", "unit": "°C",
        "traces": [{"name": f"{s.cooling_unit.name if s.cooling_unit_id else 'site'} "
                            f"{s.metric.replace('_temperature_setpoint_celsius', '').replace('_', ' ')}",
                    "series": s.pk, "unit_name": s.cooling_unit.name if s.cooling_unit_id else None,
                    "metric": s.metric, "group": s.metric} for s in series],
    }]


class LoopDataView(QueryErrorsAre400, RoleRequiredMixin, View):
    permission_required = PERMISSION

    def get(self, request):
        site = _site(request)
        start, end, _ = _window(request)
        charts = setpoint_charts(site)
        return JsonResponse({**chart_window(charts, start, end), "annotations": setpoint_annotations(site, start, end)})


# --- Detail pages ----------------------------------------------------------------------------------------

GPU_CHARTS = [
    ("temperature", "GPU and memory temperature", ["gpu_temp", "memory_temp"], "°C"),
    ("sm_clock", "SM clock", ["sm_clock"], "MHz"),
    ("power", "Board power", ["power_usage"], "W"),
    ("tflops", "Throughput", ["tflops"], "TFLOPS"),
    ("util", "GPU utilisation", ["gpu_util"], "%"),
]
COOLING_SUPPLY = {
    "supply_air_temperature_celsius": "", "supply_water_temperature_celsius": "secondary",
}


def _gpu_trace(gpu: GPU, column: str, name: str) -> dict:
    return {"name": name, "gpu": gpu.uuid, "column": column, "metric": METRIC_OF_COLUMN[column]}


def _cooling_supply_chart(units) -> dict | None:
    traces = []
    for s in Series.objects.filter(cooling_unit__in=units, metric__in=list(COOLING_SUPPLY)).select_related(
            "cooling_unit").order_by("cooling_unit__name", "metric"):
        if COOLING_SUPPLY[s.metric] == s.point:
            traces.append({"name": f"{s.cooling_unit.name} {s.metric.split('_temperature')[0].replace('_', ' ')}",
                           "series": s.pk, "metric": s.metric})
    return {"id": "cooling", "title": "Cooling supply (the units that cool this rack)", "unit": "°C",
            "traces": traces} if traces else None


def _per_gpu_charts(gpus: list[GPU], label) -> list[dict]:
    charts = []
    for chart_id, title, columns, unit in GPU_CHARTS:
        column = columns[0]
        charts.append({"id": chart_id, "title": title, "unit": unit,
                       "threshold": chart_id == "temperature",
                       "traces": [_gpu_trace(g, column, label(g)) for g in gpus]})
    return charts


class DetailPage(QueryErrorsAre400, TelemetryPage):
    """A detail page: a title, facts, a list of charts (spec below), a time-range picker and CSV export.

    Chart spec: {"id", "title", "unit", "threshold"?, "traces": [{"name", "gpu": uuid, "column"} |
    {"name", "series": id, "metric"}]}. The same spec drives the JSON window, the live updates and the CSV.
    """

    template_name = "telemetry/detail.html"
    page = "detail"
    kind = ""

    def get_object(self):
        raise NotImplementedError

    def describe(self, obj) -> tuple[Site, str, list[tuple[str, str, str | None]], list[dict]]:
        """(site, title, facts as (label, value, link), charts)."""
        raise NotImplementedError

    def get(self, request, *args, **kwargs):
        obj = self.get_object()
        site, title, facts, charts = self.describe(obj)
        fmt = kwargs.get("fmt")
        if fmt == "data":
            start, end, _ = _window(request)
            return JsonResponse(chart_window(charts, start, end))
        if fmt == "csv":
            start, end, _ = _window(request)
            return csv_response(charts, start, end, f"{self.kind}-{slugify(title)}")
        context = self.get_context_data(
            title=title, facts=facts, kind=self.kind,
            **self.live_context(site, charts=charts, data=request.path + "data",
                                csv=request.path + "export.csv", kind=self.kind),
        )
        return self.render_to_response(context)


class GpuDetailView(DetailPage):
    kind = "gpu"

    def get_object(self):
        return get_object_or_404(GPU.objects.select_related("node__rack__hall__site"), uuid=self.kwargs["uuid"])

    def describe(self, gpu):
        node, rack = gpu.node, gpu.node.rack
        hall = rack.hall
        charts = []
        for chart_id, title, columns, unit in GPU_CHARTS:
            names = {"gpu_temp": "GPU", "memory_temp": "memory"}
            charts.append({"id": chart_id, "title": title, "unit": unit, "threshold": chart_id == "temperature",
                           "traces": [_gpu_trace(gpu, c, names.get(c, title)) for c in columns]})
        units = list(rack.cooled_by.all()) or list(CoolingUnit.objects.filter(hall=hall))
        if (cooling := _cooling_supply_chart(units)) is not None:
            charts.append(cooling)
        facts = [
            ("UUID", gpu.uuid, None), ("Model", gpu.model, None), ("PCI bus", gpu.pci_bus_id or "—", None),
            ("Node", node.hostname, reverse("telemetry:node", args=[node.hostname])),
            ("Rack", rack.name, reverse("telemetry:rack", args=[rack.pk])),
            ("Hall", f"{hall.name} ({hall.get_cooling_type_display()})", None),
        ] + [(("Cooled by"), u.name, reverse("telemetry:cooling-unit", args=[u.pk])) for u in units]
        return hall.site, f"{node.hostname} / gpu{gpu.index}", facts, charts


class NodeDetailView(DetailPage):
    kind = "node"

    def get_object(self):
        return get_object_or_404(Node.objects.select_related("rack__hall__site"), hostname=self.kwargs["hostname"])

    def describe(self, node):
        gpus = list(node.gpus.select_related("node").order_by("index"))
        rack, hall = node.rack, node.rack.hall
        charts = _per_gpu_charts(gpus, lambda g: f"gpu{g.index}")
        units = list(rack.cooled_by.all()) or list(CoolingUnit.objects.filter(hall=hall))
        if (cooling := _cooling_supply_chart(units)) is not None:
            charts.append(cooling)
        facts = [("Model", node.model, None), ("Slot", str(node.slot), None),
                 ("Rack", rack.name, reverse("telemetry:rack", args=[rack.pk])),
                 ("Hall", f"{hall.name} ({hall.get_cooling_type_display()})", None)]
        facts += [(f"gpu{g.index}", g.uuid, reverse("telemetry:gpu", args=[g.uuid])) for g in gpus]
        return hall.site, node.hostname, facts, charts


class RackDetailView(DetailPage):
    kind = "rack"

    def get_object(self):
        return get_object_or_404(Rack.objects.select_related("hall__site"), pk=self.kwargs["pk"])

    def describe(self, rack):
        gpus = list(GPU.objects.filter(node__rack=rack).select_related("node").order_by("node__slot", "index"))
        hall = rack.hall
        charts = _per_gpu_charts(gpus, lambda g: f"{g.node.hostname}/{g.index}")
        units = list(rack.cooled_by.all()) or list(CoolingUnit.objects.filter(hall=hall))
        if (cooling := _cooling_supply_chart(units)) is not None:
            charts.append(cooling)
        facts = [("Hall", f"{hall.name} ({hall.get_cooling_type_display()})", None),
                 ("Row / position", f"{rack.row} / {rack.position}", None)]
        facts += [("Node", n.hostname, reverse("telemetry:node", args=[n.hostname]))
                  for n in rack.nodes.order_by("slot")]
        facts += [("Cooled by", u.name, reverse("telemetry:cooling-unit", args=[u.pk])) for u in units]
        return hall.site, f"Rack {rack.name}", facts, charts


class CoolingUnitDetailView(DetailPage):
    kind = "cooling-unit"

    def get_object(self):
        return get_object_or_404(CoolingUnit.objects.select_related("site", "hall"), pk=self.kwargs["pk"])

    def describe(self, unit):
        groups: dict[str, list[dict]] = {}
        for s in Series.objects.filter(cooling_unit=unit).order_by("metric", "point"):
            label = unit_label(s.metric)
            key = "power" if label == "kW" else label
            name = s.metric.replace("_celsius", "").replace("_kilowatt", "").replace("_", " ")
            trace = {"name": f"{name}{' (' + s.point + ')' if s.point else ''}", "series": s.pk, "metric": s.metric}
            if metric_info(s.metric).setpoint:
                trace["dash"] = "dot"
            groups.setdefault(key, []).append(trace)
        titles = {"°C": "Temperatures and setpoints", "L/min": "Flow", "kPa": "Pressure", "ratio": "Speeds (ratio)",
                  "power": "Power and heat removed"}
        ordered = sorted(groups, key=lambda k: list(titles).index(k) if k in titles else len(titles))
        charts = [{"id": f"c{i}", "title": titles.get(key, key), "unit": "kW" if key == "power" else key,
                   "traces": groups[key]} for i, key in enumerate(ordered)]
        facts = [("Kind", unit.get_kind_display(), None),
                 ("Hall", unit.hall.name if unit.hall_id else "central plant", None),
                 ("Capacity", f"{unit.capacity_kw:.0f} kW" if unit.capacity_kw else "—", None)]
        facts += [(f"Setpoint {sp.name}", f"{sp.value:g} ({sp.allowable_min:g}–{sp.allowable_max:g})", None)
                  for sp in unit.setpoints.order_by("name")]
        facts += [("Cools", r.name, reverse("telemetry:rack", args=[r.pk])) for r in unit.racks.order_by("name")]
        return unit.site, unit.name, facts, charts


# --- Chart windows and CSV, from the same query functions -----------------------------------------------


def _chart_series(charts: list[dict], start: float, end: float) -> dict[tuple, query.SeriesData]:
    """Fetch every trace of these charts once: GPUs with all their columns, then point series."""
    uuids = sorted({t["gpu"] for c in charts for t in c["traces"] if "gpu" in t})
    metrics = sorted({t["metric"] for c in charts for t in c["traces"] if "gpu" in t})
    found: dict[tuple, query.SeriesData] = {}
    if uuids and metrics:
        gpus = list(GPU.objects.filter(uuid__in=uuids).select_related("node"))
        for s in query.gpu_series(gpus, metrics, start, end, MAX_POINTS):
            found[("gpu", s.entity["uuid"], GPU_COLUMNS[s.metric])] = s
    ids = sorted({t["series"] for c in charts for t in c["traces"] if "series" in t})
    if ids:
        series = list(Series.objects.filter(pk__in=ids).select_related("cooling_unit"))
        by_key = {(s.cooling_unit.name if s.cooling_unit_id else None, s.point, s.metric): s.pk for s in series}
        for s in query.point_series(series, start, end, MAX_POINTS):
            found[("series", by_key[(s.entity["cooling_unit"], s.entity["point"], s.metric)])] = s
    return found


def _trace_key(trace: dict) -> tuple:
    return ("gpu", trace["gpu"], trace["column"]) if "gpu" in trace else ("series", trace["series"])


def chart_window(charts: list[dict], start: float, end: float) -> dict:
    found = _chart_series(charts, start, end)
    empty = query.SeriesData({}, "", "", [], [])
    return {
        "start": start, "end": end, "bucket_seconds": query.bucket_seconds(start, end, MAX_POINTS),
        "charts": [{"id": c["id"], "traces": [{"t": (s := found.get(_trace_key(t), empty)).t, "v": s.v}
                                              for t in c["traces"]]} for c in charts],
    }


def csv_response(charts: list[dict], start: float, end: float, name: str) -> HttpResponse:
    found = _chart_series(charts, start, end)
    stamp = lambda t: datetime.fromtimestamp(t, UTC).strftime("%Y%m%dT%H%M%SZ")  # noqa: E731
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}-{stamp(start)}-{stamp(end)}.csv"'
    writer = csv.writer(response)
    writer.writerow(["time", "epoch_s", "chart", "trace", "entity", "metric", "unit", "value"])
    for chart in charts:
        for trace in chart["traces"]:
            s = found.get(_trace_key(trace))
            if s is None:
                continue
            entity = "/".join(f"{v}" for v in s.entity.values() if v not in (None, ""))
            for t, v in zip(s.t, s.v, strict=True):
                writer.writerow([datetime.fromtimestamp(t, UTC).isoformat(), f"{t:.0f}", chart["title"],
                                 trace["name"], entity, s.metric, s.unit, "" if not math.isfinite(v) else repr(v)])
    return response
