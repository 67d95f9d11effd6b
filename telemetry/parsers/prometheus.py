"""dcgm-exporter / Prometheus text exposition (0.0.4, with Prometheus 3 quoted UTF-8 names), OpenMetrics 1.0.

Hand-written rather than prometheus_client's parser because ingestion needs what that parser does not give:
every bad line reported with its number while parsing goes on (it stops at the first error, without a line),
strict rejection of trailing garbage it accepts (``x 1 2 3``, ``x{,} 1``), both formats' timestamp units
from one code path, and about three times its speed (~15 us per DCGM sample line, normalisation included).
The tests check this parser against prometheus_client on the real scrapes where that package is installed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator

from telemetry.catalogue import Equipment, Kind, Metric, resolve
from telemetry.parsers import GpuEntity, ParseError, ParseResult, Sample, clip

__all__ = ["DCGM_FP64_BLANKS", "DCGM_INT64_BLANK_FLOAT", "is_dcgm_blank", "iter_series", "parse_exposition"]

# DCGM "blank" values (dcgm_structs.h). INT64: 0x7ffffffffffffff0 + {0 blank, 1 not found, 2 not supported,
# 3 no permission}; as floats they all round to ~9.223372036854776e18, so anything >= 9.2e18 is a sentinel.
# FP64: 2**47 + {0..3}. (The INT32 blanks, 0x7ffffff0 + n, are not treated as sentinels: a real mJ energy
# counter passes 2.1e9 within hours.)
DCGM_INT64_BLANK_FLOAT = 9.2e18
DCGM_FP64_BLANKS = frozenset(float(2**47 + n) for n in range(4))

_TYPES = frozenset({"counter", "gauge", "histogram", "summary", "untyped", "unknown", "gaugehistogram",
                    "stateset", "info"})  # fmt: skip
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_INT = re.compile(r"[+-]?[0-9]+")
# Go's ParseFloat forms that exporters emit; Python's float() alone would also take "1_000" and "infinity".
_FLOAT = re.compile(r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[Ii]nf|NaN|nan)")
_WS = " \t"
# The common case, name="value" without escapes, in one regex; anything else takes the careful path.
_SIMPLE_LABEL = re.compile(r'[ \t]*([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"([^"\\]*)"[ \t]*(,|\})')

# dcgm-exporter labels. Hostname became hostname (dcgm-exporter #655); UUID appears as uuid in some setups.
_UUID_LABELS = ("UUID", "uuid")
_HOST_LABELS = ("Hostname", "hostname")
_MODEL_LABELS = ("modelName", "model_name")


class _LineError(Exception):
    pass


# Enough to show what is wrong with a body; the batch is rejected whole either way.
MAX_PARSE_ERRORS = 1000


def is_dcgm_blank(value: float) -> bool:
    """True if ``value`` is one of DCGM's "no data" sentinels rather than a measurement."""
    # +Inf is not a sentinel: it is an error the catalogue check reports.
    return math.isfinite(value) and (value >= DCGM_INT64_BLANK_FLOAT or value in DCGM_FP64_BLANKS)


def parse_exposition(text: str, *, default_timestamp: float, openmetrics: bool | None = None) -> ParseResult:
    """Parse a scrape into catalogue samples.

    ``default_timestamp`` (seconds) stamps samples that carry no timestamp. ``openmetrics`` picks the format;
    None detects it from a ``# EOF`` line. Text-format timestamps are milliseconds, OpenMetrics ones seconds;
    both come out in seconds.
    """
    result = ParseResult()
    lines = _split_lines(text)
    if openmetrics is None:
        openmetrics = any(line.rstrip() == "# EOF" for line in lines)
    seen: set[tuple[str, object, float]] = set()
    eof_line: int | None = None
    # A scrape repeats each GPU's label set once per field: parse each distinct one (and its entity) once.
    label_sets: dict[str, tuple[dict[str, str], str | None]] = {}
    entities: dict[tuple[str, bool], GpuEntity | str] = {}

    for number, line in enumerate(lines, start=1):
        if len(result.errors) >= MAX_PARSE_ERRORS:  # a body of garbage: say so, without an object per line
            result.errors.append(ParseError(f"more than {MAX_PARSE_ERRORS} problems: lines from here on were not "
                                            "read", line=number))
            break
        stripped = line.strip(_WS)
        if eof_line is not None:
            if stripped:
                result.errors.append(ParseError("content after # EOF", line=number, text=clip(line)))
            continue
        if not stripped:
            continue
        try:
            if stripped.startswith("#"):
                if _comment(stripped) == "EOF":
                    eof_line = number
                continue
            name, labels, value, ts, label_key = _sample(stripped, openmetrics, label_sets)
        except _LineError as exc:
            result.errors.append(ParseError(str(exc), line=number, text=clip(line)))
            continue
        _normalise(result, seen, name, labels, value, ts, default_timestamp, number, line, label_key, entities)

    if openmetrics and eof_line is None:
        result.errors.append(
            ParseError("OpenMetrics exposition does not end with # EOF", line=len(lines) or 1)
        )
    return result


def _split_lines(text: str) -> list[str]:
    # Only "\n" ends a line in the exposition formats; str.splitlines() would also split on \x0b, \u2028...
    # inside label values and HELP text.
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _lookup(name: str) -> Metric | None:
    metric = resolve(name)
    # OpenMetrics appends _total to counter samples; the catalogue holds the family name.
    if metric is None and name.endswith("_total"):
        base = resolve(name[: -len("_total")])
        if base is not None and base.kind is Kind.COUNTER:
            metric = base
    return metric


def _normalise(
    result: ParseResult,
    seen: set[tuple[str, object, float]],
    name: str,
    labels: dict[str, str],
    value: float,
    ts: float | None,
    default_timestamp: float,
    number: int,
    line: str,
    label_key: str | None = None,
    entities: dict | None = None,
) -> None:
    metric = _lookup(name)
    if metric is None or metric.equipment is not Equipment.GPU:
        result.unknown_metrics[name] += 1
        return
    if is_dcgm_blank(value):
        result.skipped_not_supported += 1
        return
    problem = metric.check(value)
    if problem is not None:
        result.errors.append(ParseError(problem, line=number, text=clip(line)))
        return
    cache_key = (label_key, metric.per_mig_instance)
    entity = entities.get(cache_key) if entities is not None and label_key is not None else None
    if entity is None:
        try:
            entity = _gpu_entity(labels, keep_mig=metric.per_mig_instance)
        except _LineError as exc:
            entity = str(exc)
        if entities is not None and label_key is not None:
            entities[cache_key] = entity
    if isinstance(entity, str):  # the label set has no usable GPU identity
        result.errors.append(ParseError(entity, line=number, text=clip(line)))
        return
    timestamp = default_timestamp if ts is None else ts
    # Identity of the series for folding: the physical GPU (UUID if known) plus the MIG instance if kept.
    gpu_key: object = entity.uuid or (entity.hostname, entity.gpu)
    key = (metric.name, (gpu_key, entity.gpu_instance_id), timestamp)
    if key in seen:
        if "GPU_I_ID" in labels and not metric.per_mig_instance:
            result.mig_duplicates_folded += 1
        else:
            result.duplicates_folded += 1
        return
    seen.add(key)
    result.samples.append(Sample(metric.name, float(value), timestamp, entity, line=number))


def _first(labels: dict[str, str], names: tuple[str, ...]) -> str | None:
    for name in names:
        value = labels.get(name)
        if value:
            return value
    return None


def _int_label(labels: dict[str, str], name: str) -> int | None:
    value = labels.get(name)
    if value is None or value == "":
        return None
    if not _INT.fullmatch(value):
        raise _LineError(f"label {name}={value!r} is not an integer")
    return int(value)


def _gpu_entity(labels: dict[str, str], *, keep_mig: bool) -> GpuEntity:
    uuid = _first(labels, _UUID_LABELS)
    gpu = _int_label(labels, "gpu")
    if uuid is None and gpu is None:
        raise _LineError("no GPU identity: neither a UUID/uuid nor a gpu label")
    return GpuEntity(
        uuid=uuid,
        hostname=_first(labels, _HOST_LABELS),
        gpu=gpu,
        pci_bus_id=labels.get("pci_bus_id") or None,
        model_name=_first(labels, _MODEL_LABELS),
        device=labels.get("device") or None,
        gpu_instance_id=_int_label(labels, "GPU_I_ID") if keep_mig else None,
        gpu_instance_profile=(labels.get("GPU_I_PROFILE") or None) if keep_mig else None,
    )


# --- the grammar ---------------------------------------------------------------------------------------


def _comment(line: str) -> str | None:
    """Validate a comment line; return its keyword (HELP, TYPE, UNIT, EOF) or None for a plain comment."""
    parts = line[1:].strip(_WS).split(None, 2)
    if not parts or parts[0] not in ("HELP", "TYPE", "UNIT", "EOF"):
        return None
    keyword = parts[0]
    if keyword == "EOF":
        if len(parts) > 1:
            raise _LineError("unexpected text after # EOF")
        return keyword
    if len(parts) < 2:
        raise _LineError(f"# {keyword} without a metric name")
    family = parts[1]
    if not (
        _METRIC_NAME.fullmatch(family)
        or (family.startswith('"') and family.endswith('"') and len(family) > 1)
    ):
        raise _LineError(f"invalid metric name {family!r} in # {keyword}")
    if keyword == "TYPE":
        kind = parts[2].strip(_WS) if len(parts) > 2 else ""
        if kind not in _TYPES:
            raise _LineError(f"invalid metric type {kind!r}")
    return keyword


def _sample(
    line: str, openmetrics: bool, label_sets: dict | None = None
) -> tuple[str, dict[str, str], float, float | None, str | None]:
    """One sample line → name, labels, value, timestamp (s) and the label set's text (a cache key).

    With `label_sets`, a label set already parsed in this scrape is reused: its text up to the first "}"
    parsed completely and ended there, so the same text parses the same way. Callers must not change the
    labels they get (they are shared between lines).
    """
    pos = 0
    name: str | None = None
    if line[0] != "{":
        match = _METRIC_NAME.match(line)
        if match is None:
            raise _LineError("invalid metric name")
        name, pos = match.group(), match.end()
    labels: dict[str, str] = {}
    label_key: str | None = None
    brace = _skip_ws(line, pos)  # "name {...}" is tolerated, as Prometheus does
    if brace < len(line) and line[brace] == "{":
        close = line.find("}", brace)
        key = line[brace:close + 1] if close >= 0 and label_sets is not None else None
        cached = label_sets.get(key) if key is not None else None
        if cached is not None:
            (labels, quoted_name), pos = cached, close + 1
        else:
            labels, quoted_name, pos = _labels(line, brace)
            if key is not None and pos == close + 1:
                label_sets[key] = (labels, quoted_name)
        label_key = key if pos == close + 1 else None
        if quoted_name is not None:
            if name is not None:
                raise _LineError("metric name given both before and inside the braces")
            name = quoted_name
    if name is None:
        raise _LineError("missing metric name")
    rest = line[pos:]
    if rest and rest[0] not in _WS:
        raise _LineError(f"expected a space before the value, found {rest[0]!r}")
    if openmetrics:
        # Exemplars (" # {labels} value [ts]") annotate counters and buckets; they carry no sample for us.
        hash_at = rest.find("#")
        if hash_at >= 0:
            exemplar = rest[hash_at + 1 :].strip(_WS)
            if not exemplar.startswith("{"):
                raise _LineError("malformed exemplar")
            rest = rest[:hash_at]
    tokens = rest.split()
    if not tokens:
        raise _LineError("missing value")
    if len(tokens) > 2:
        raise _LineError(f"unexpected text after the timestamp: {' '.join(tokens[2:])!r}")
    if not _FLOAT.fullmatch(tokens[0]):
        raise _LineError(f"invalid value {tokens[0]!r}")
    value = float(tokens[0])
    ts: float | None = None
    if len(tokens) == 2:
        if openmetrics:
            if not _FLOAT.fullmatch(tokens[1]) or not math.isfinite(float(tokens[1])):
                raise _LineError(f"invalid timestamp {tokens[1]!r}")
            ts = float(tokens[1])
        else:
            if not _INT.fullmatch(tokens[1]):
                raise _LineError(f"invalid timestamp {tokens[1]!r} (text format wants integer milliseconds)")
            try:
                ts = int(tokens[1]) / 1000.0
            except (OverflowError, ValueError):  # hundreds of digits: beyond a float, or beyond int() itself
                raise _LineError(f"timestamp {tokens[1][:40]!r}... is out of range") from None
    return name, labels, value, ts, label_key


def _skip_ws(line: str, pos: int) -> int:
    while pos < len(line) and line[pos] in _WS:
        pos += 1
    return pos


def _quoted(line: str, pos: int) -> tuple[str, int]:
    """Parse a double-quoted string starting at ``pos``; return it unescaped and the position after it."""
    start = pos + 1
    end = line.find('"', start)
    if end >= 0 and line.find("\\", start, end) < 0:
        return line[start:end], end + 1  # fast path: no escapes
    out: list[str] = []
    i = start
    n = len(line)
    while i < n:
        char = line[i]
        if char == "\\":
            if i + 1 >= n:
                break
            nxt = line[i + 1]
            # Only \\ \" \n are escapes; anything else is kept as written, like Prometheus does.
            out.append({"\\": "\\", '"': '"', "n": "\n"}.get(nxt, "\\" + nxt))
            i += 2
            continue
        if char == '"':
            return "".join(out), i + 1
        out.append(char)
        i += 1
    raise _LineError("unterminated quoted string")


def _labels(line: str, pos: int) -> tuple[dict[str, str], str | None, int]:
    labels: dict[str, str] = {}
    quoted_name: str | None = None
    pos += 1  # the "{"
    n = len(line)
    while True:
        simple = _SIMPLE_LABEL.match(line, pos)
        if simple is not None and simple.group(1) not in labels:
            labels[simple.group(1)] = simple.group(2)
            if simple.group(3) == "}":
                return labels, quoted_name, simple.end()
            pos = simple.end()
            continue
        pos = _skip_ws(line, pos)
        if pos >= n:
            raise _LineError("unterminated label set")
        if line[pos] == "}":
            return labels, quoted_name, pos + 1
        if line[pos] == '"':
            key, pos = _quoted(line, pos)
            pos = _skip_ws(line, pos)
            if pos < n and line[pos] in ",}":
                # Prometheus 3: {"metric.name", label="v"} carries the metric name as a bare quoted string.
                if quoted_name is not None or labels:
                    raise _LineError("quoted metric name must come first in the braces")
                quoted_name = key
                if line[pos] == ",":
                    pos += 1
                continue
        else:
            match = _LABEL_NAME.match(line, pos)
            if match is None:
                raise _LineError(f"expected a label name at column {pos + 1}")
            key, pos = match.group(), match.end()
            pos = _skip_ws(line, pos)
        if pos >= n or line[pos] != "=":
            raise _LineError(f"expected '=' after label {key!r}")
        pos = _skip_ws(line, pos + 1)
        if pos >= n or line[pos] != '"':
            raise _LineError(f"label {key!r} value is not quoted")
        value, pos = _quoted(line, pos)
        if key in labels:
            raise _LineError(f"duplicate label {key!r}")
        labels[key] = value
        pos = _skip_ws(line, pos)
        if pos < n and line[pos] == ",":
            pos += 1
        elif pos < n and line[pos] == "}":
            continue
        else:
            raise _LineError("expected ',' or '}' after a label")


def iter_series(text: str) -> Iterator[tuple[int, str, dict[str, str], float, float | None]]:
    """Yield (line, name, labels, value, timestamp_s) for every well-formed sample line, skipping bad ones.

    For tools and tests that want raw series without catalogue mapping.
    """
    lines = _split_lines(text)
    openmetrics = any(line.rstrip() == "# EOF" for line in lines)
    for number, raw in enumerate(lines, start=1):
        stripped = raw.strip(_WS)
        if not stripped or stripped.startswith("#"):
            continue
        try:
            name, labels, value, ts, _ = _sample(stripped, openmetrics)
        except _LineError:
            continue
        yield number, name, labels, value, ts
