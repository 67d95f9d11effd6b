"""The model page: the active forecaster, how it trained, how it does live, and the cache it holds.

Needs `inference.view_modelversion` (every role reads it). The page renders the held-out numbers stored on
the model versions; its JSON window (`models/data`) compares one GPU's stored forecasts with what that GPU
then measured, so the forecast-vs-actual chart and the live error per horizon come from the same rows.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
from django.http import Http404, JsonResponse
from django.urls import reverse
from django.utils import timezone
from django.views import View
from django.views.generic import TemplateView

from facility.mixins import RoleRequiredMixin
from facility.models import GPU, Site
from inference.model import FEATURE_NAMES, ForecasterConfig, cache_bytes_per_token
from inference.models import Forecast, InferenceStats, ModelKind, ModelVersion
from telemetry import live, query
from telemetry.api.views import error_body

PERMISSION = "inference.view_modelversion"
# Forecast-vs-actual windows (seconds) and the most forecast rows one window returns per horizon.
RANGES = {"15m": 900, "1h": 3600, "24h": 86400}
MAX_FORECAST_POINTS = 720
WORKER_STALE_SECONDS = 300
TARGETS = {  # forecast column prefix -> telemetry metric of the truth, label, unit
    "gpu_temperature_celsius": ("DCGM_FI_DEV_GPU_TEMP", "GPU temperature", "°C"),
    "sm_clock_megahertz": ("DCGM_FI_DEV_SM_CLOCK", "SM clock", "MHz"),
    "power_watts": ("DCGM_FI_DEV_POWER_USAGE", "Board power", "W"),
}


def _site(request) -> Site | None:
    slug = request.GET.get("site")
    if slug:
        site = Site.objects.filter(slug=slug).first()
        if site is None:
            raise Http404(f"no site {slug!r}")
        return site
    return Site.objects.order_by("name").first()


def held_out_errors(version: ModelVersion | None) -> dict:
    """{target: {horizon: {"mae", "persistence_mae", "coverage_p10_p90"}}} from a version's held-out metrics."""
    out: dict[str, dict[str, dict]] = {}
    for horizon, entry in ((version.metrics or {}).get("horizons", {}) if version else {}).items():
        for target in TARGETS:
            if target in entry:
                out.setdefault(target, {})[horizon] = {
                    k: entry[target].get(k) for k in ("mae", "persistence_mae", "coverage_p10_p90")}
    return out


def _shapes(version: ModelVersion) -> ForecasterConfig:
    """The version's config for its shapes, horizons and cache size. A version trained on an older feature list
    (which no worker serves: `ForecasterConfig` refuses it) still shows on the page."""
    return ForecasterConfig.from_dict({**version.config, "features": list(FEATURE_NAMES)})


def cache_memory(version: ModelVersion | None) -> list[dict]:
    """Per serving worker: streams held and cache bytes, beside what MHA with the same shapes would hold."""
    if version is None:
        return []
    config = _shapes(version)
    mla = cache_bytes_per_token(config)["model"]
    mha = cache_bytes_per_token(replace(config, attention="mha"))["model"]
    rows = []
    # Workers that reported recently: a stopped or restarted worker's last row stays behind in the table.
    recent = timezone.now() - timedelta(seconds=WORKER_STALE_SECONDS)
    for stats in InferenceStats.objects.filter(model_version=version, updated_at__gte=recent).order_by("worker"):
        rows.append({"worker": stats.worker, "streams": stats.streams, "bytes": stats.cache_bytes,
                     "mha_bytes": round(stats.cache_bytes * mha / mla) if mla else None,
                     "updated_at": stats.updated_at.timestamp()})
    return rows


def _version_summary(version: ModelVersion | None) -> dict | None:
    if version is None:
        return None
    temp60 = held_out_errors(version).get("gpu_temperature_celsius", {}).get("60s", {})
    config = _shapes(version)
    return {
        "name": version.name, "kind": version.get_kind_display(), "active": version.active,
        "created_at": version.created_at, "site": version.site.name if version.site_id else None,
        "data_start": version.data_start, "data_end": version.data_end,
        "training_seconds": version.training_seconds, "checksum": version.checksum_sha256,
        "best_epoch": (version.metrics or {}).get("split", {}).get("best_epoch"),
        "layers": config.num_layers, "hidden": config.hidden_size, "heads": config.num_attention_heads,
        "horizons": [f"{h:g} s" for h in config.horizons_s],
        "cache_per_token": cache_bytes_per_token(config)["model"],
        "temp60_mae": temp60.get("mae"), "temp60_persistence": temp60.get("persistence_mae"),
        "temp60_coverage": temp60.get("coverage_p10_p90"),
    }


class ModelPage(RoleRequiredMixin, TemplateView):
    permission_required = PERMISSION
    template_name = "inference/model.html"

    def get_context_data(self, **kwargs):
        site = _site(self.request)
        active = ModelVersion.objects.filter(kind=ModelKind.FORECASTER, active=True).select_related("site").first()
        baseline = ModelVersion.objects.filter(kind=ModelKind.MHA_BASELINE, active=True).first()
        gpus = list(GPU.objects.filter(node__rack__hall__site=site).select_related("node")
                    .order_by("node__hostname", "index")) if site else []
        chosen = self.request.GET.get("gpu")
        if not chosen and gpus:
            newest = (Forecast.objects.filter(gpu__in=[g.pk for g in gpus]).order_by("-made_at")
                      .values_list("gpu__uuid", flat=True).first())
            chosen = newest or gpus[0].uuid
        config = {
            "data": reverse("inference:model-data"), "site": site.slug if site else None, "gpu": chosen,
            "horizons": [round(h) for h in _shapes(active).horizons_s] if active else [],
            "curves": {"active": active.training_curves if active else [],
                       "baseline": baseline.training_curves if baseline else [],
                       "best_epoch": (active.metrics or {}).get("split", {}).get("best_epoch") if active else None},
            "errors": {"active": held_out_errors(active), "baseline": held_out_errors(baseline)},
            "targets": {k: {"label": label, "unit": unit} for k, (_, label, unit) in TARGETS.items()},
            "cache": cache_memory(active),
            "ranges": list(RANGES),
            "slowdown_c": live.SLOWDOWN_C,
            "urls": {"gpu": reverse("telemetry:gpu", args=["UUID"])},
        }
        return super().get_context_data(
            **kwargs, site=site, active=_version_summary(active), baseline=_version_summary(baseline),
            versions=[_version_summary(v) for v in ModelVersion.objects.select_related("site")[:20]],
            gpus=gpus, chosen=chosen, config=config, ranges=[("15m", "15 min"), ("1h", "1 h"), ("24h", "24 h")],
        )


class ModelDataView(RoleRequiredMixin, View):
    """One GPU's forecasts and measurements over a window, and the live error per horizon they give."""

    permission_required = PERMISSION

    def get(self, request):
        uuid = request.GET.get("gpu", "")
        gpu = GPU.objects.filter(uuid=uuid).select_related("node").first()
        if gpu is None:
            return _invalid("gpu", f"no GPU with UUID {uuid!r}")
        name = request.GET.get("range", "1h")
        if name not in RANGES:
            return _invalid("range", f"one of {', '.join(RANGES)}")
        end = time.time()
        return JsonResponse(forecast_window(gpu, end - RANGES[name], end))


def _invalid(item: str, reason: str) -> JsonResponse:
    return JsonResponse(error_body("invalid_query", "the query parameters are not valid",
                                   [{"item": item, "reason": reason}]), status=400)


def forecast_window(gpu: GPU, start: float, end: float) -> dict:
    """Per horizon: forecast quantiles at their valid times in [start, end]; the measured series over the
    same span; and per horizon and target the MAE of the median and of persistence where both are known."""
    horizons_s = sorted(Forecast.objects.filter(gpu=gpu).values_list("horizon_s", flat=True).distinct())
    longest = max(horizons_s, default=0)
    measured = {s.metric: (np.asarray(s.t, float), np.asarray(s.v, float)) for s in query.gpu_series(
        [gpu], [m for m, _, _ in TARGETS.values()], start - longest, end, max_points=4000)}
    width = query.bucket_seconds(start - longest, end, 4000)
    horizons = {}
    for horizon in horizons_s:
        rows = list(Forecast.objects.filter(
            gpu=gpu, horizon_s=horizon, made_at__gte=datetime.fromtimestamp(start - horizon, UTC),
            made_at__lt=datetime.fromtimestamp(end - horizon, UTC) + timedelta(seconds=horizon),
        ).order_by("made_at").values("made_at", *(f"{t}_{q}" for t in TARGETS for q in ("p10", "p50", "p90")),
                                     "throttle_probability"))
        step = max(1, len(rows) // MAX_FORECAST_POINTS)
        shown = rows[::step]
        made = np.array([r["made_at"].timestamp() for r in rows], float)
        entry = {"valid_at": [r["made_at"].timestamp() + horizon for r in shown],
                 "throttle_probability": [r["throttle_probability"] for r in shown], "targets": {}, "errors": {}}
        for target, (metric, _, _) in TARGETS.items():
            entry["targets"][target] = {q: [r[f"{target}_{q}"] for r in shown] for q in ("p10", "p50", "p90")}
            t, v = measured.get(metric, (np.empty(0), np.empty(0)))
            entry["errors"][target] = _live_error(made, horizon, np.array([r[f"{target}_p50"] for r in rows], float),
                                                  t, v, width)
        horizons[str(horizon)] = entry
    truth = {target: {"t": measured[metric][0].tolist(), "v": measured[metric][1].tolist()}
             for target, (metric, _, _) in TARGETS.items() if metric in measured}
    return {"gpu": {"uuid": gpu.uuid, "name": f"{gpu.node.hostname}/gpu{gpu.index}"}, "start": start, "end": end,
            "horizons": horizons, "measured": truth}


def _live_error(made: np.ndarray, horizon: float, p50: np.ndarray, t: np.ndarray, v: np.ndarray,
                width: float) -> dict:
    """MAE of the median forecast and of persistence (the value measured when the forecast was made)
    against the measured value at the valid time, over forecasts whose both ends fall on measurements; and
    the median's bias (mean forecast minus measured: negative when the model under-predicts)."""
    none = {"mae": None, "persistence_mae": None, "bias": None, "n": 0}
    if len(made) == 0 or len(t) < 2:
        return none
    valid = made + horizon

    def measured_at(when):
        # Bucket means sit at bucket starts; only trust a value with a measurement within one bucket.
        i = np.clip(np.searchsorted(t, when), 1, len(t) - 1)
        near = np.minimum(np.abs(t[i] - when), np.abs(t[i - 1] - when)) <= width
        return np.where(near, np.interp(when, t, v), np.nan)

    actual, then = measured_at(valid), measured_at(made)
    ok = ~np.isnan(actual) & ~np.isnan(then) & ~np.isnan(p50) & (valid <= t[-1])
    if not ok.any():
        return none
    error = p50[ok] - actual[ok]
    return {"mae": float(np.abs(error).mean()), "persistence_mae": float(np.abs(then[ok] - actual[ok]).mean()),
            "bias": float(error.mean()), "n": int(ok.sum())}
