"""Polling sources: dcgm-exporter `/metrics` and Redfish cooling-unit resources, fed into the one pipeline."""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.error
import urllib.request
from datetime import timedelta

from django.db.models import F
from django.utils import timezone

from telemetry.buffer import BufferUnavailable
from telemetry.ingest import BatchRejected, IngestReport, ingest
from telemetry.models import ScrapeTarget
from telemetry.parsers.prometheus import parse_exposition
from telemetry.parsers.redfish import parse_redfish

MAX_BYTES = 16 * 1024 * 1024
# A Redfish collection lists members by reference; fetch at most this many of them per poll.
MAX_MEMBERS = 64


class ScrapeFailed(Exception):
    pass


def _get(target: ScrapeTarget, url: str, accept: str) -> bytes:
    request = urllib.request.Request(url, headers={"Accept": accept, "User-Agent": "FuseDC/1"})  # noqa: S310
    if target.auth_env:
        credentials = os.environ.get(target.auth_env)
        if not credentials:
            raise ScrapeFailed(f"environment variable {target.auth_env} is not set")
        request.add_header("Authorization", "Basic " + base64.b64encode(credentials.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=target.timeout_seconds) as response:  # noqa: S310
            body = response.read(MAX_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise ScrapeFailed(f"HTTP {exc.code} from {url}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise ScrapeFailed(f"{url}: {getattr(exc, 'reason', exc)}") from None
    if len(body) > MAX_BYTES:
        raise ScrapeFailed(f"{url}: body larger than {MAX_BYTES} bytes")
    return body


def _redfish_documents(target: ScrapeTarget) -> list[dict]:
    base = target.url.split("/redfish/", 1)[0]
    doc = json.loads(_get(target, target.url, "application/json"))
    documents = [doc]
    for member in (doc.get("Members") or [])[:MAX_MEMBERS]:
        if isinstance(member, dict) and set(member) == {"@odata.id"}:  # a reference, not an expanded member
            documents.append(json.loads(_get(target, base + member["@odata.id"], "application/json")))
    return documents


def scrape(target: ScrapeTarget) -> IngestReport:
    """Fetch, parse and ingest one target; raises ScrapeFailed, BatchRejected or BufferUnavailable."""
    now = time.time()
    if target.kind == ScrapeTarget.Kind.PROMETHEUS:
        body = _get(target, target.url, "text/plain;version=0.0.4")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ScrapeFailed(f"{target.url}: not UTF-8 (byte {exc.start})") from None
        parsed = parse_exposition(text, default_timestamp=now)
    else:
        try:
            documents = _redfish_documents(target)
        except json.JSONDecodeError as exc:
            raise ScrapeFailed(f"{target.url}: not JSON ({exc.msg})") from None
        parsed = parse_redfish(documents, unit_name=target.cooling_unit or None, default_timestamp=now)
    return ingest(target.source, parsed, now=now)


def scrape_due(now=None) -> dict[str, int]:
    """Scrape every enabled target whose interval has passed; record the outcome on the target."""
    now = now or timezone.now()
    outcome = {"ok": 0, "failed": 0}
    targets = ScrapeTarget.objects.filter(enabled=True, source__revoked_at__isnull=True).select_related("source")
    for target in targets:
        if target.last_scraped_at and target.last_scraped_at + timedelta(seconds=target.interval_seconds) > now:
            continue
        try:
            report = scrape(target)
            status, failures = f"ok: {report.accepted} samples", 0
            outcome["ok"] += 1
        except (ScrapeFailed, BatchRejected, BufferUnavailable) as exc:
            detail = "; ".join(str(e) for e in exc.errors[:3]) if isinstance(exc, BatchRejected) else str(exc)
            status, failures = f"failed: {detail}"[:200], F("consecutive_failures") + 1
            outcome["failed"] += 1
        ScrapeTarget.objects.filter(pk=target.pk).update(
            last_scraped_at=now, last_status=status, consecutive_failures=failures
        )
    return outcome
