import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telemetry.parsers import GpuEntity, ParseResult
from telemetry.parsers.prometheus import is_dcgm_blank, iter_series, parse_exposition
from telemetry.tests import DATA

T0 = 1_700_000_000.0
L4_UUID = "GPU-c2f76b33-7953-256e-8f33-1343419b1a1c"
# The one line of the upstream text-format example that has no value (a documentation bug, see its README).
DOC_BUG_LINE = '{"my.dotted.metric", "error.message"="Not Found"}'
GOOD = 'DCGM_FI_DEV_GPU_TEMP{gpu="0",UUID="GPU-a",Hostname="h1"} 41'
GOOD_2 = 'DCGM_FI_DEV_GPU_TEMP{gpu="1",UUID="GPU-b",Hostname="h1"} 42'


def parse(text: str, **kwargs) -> ParseResult:
    return parse_exposition(text, default_timestamp=T0, **kwargs)


def read(*parts: str) -> str:
    return DATA.joinpath(*parts).read_text(encoding="utf-8")


def by_metric(result: ParseResult) -> dict[str, list]:
    out: dict[str, list] = {}
    for sample in result.samples:
        out.setdefault(sample.metric, []).append(sample)
    return out


# --- the real files ---


@pytest.mark.parametrize("path", sorted((DATA / "dcgm").glob("*.prom")), ids=lambda p: p.name)
def test_every_dcgm_scrape_parses_without_errors(path):
    result = parse(path.read_text(encoding="utf-8"))
    assert result.errors == []
    assert result.samples
    assert all(s.timestamp == T0 for s in result.samples)


def test_l4_full_scrape():
    result = parse(read("dcgm", "example-scrape-L4-default-counters.prom"))
    assert result.errors == []
    assert len(result.samples) == 22
    assert result.unknown_metrics == {"DCGM_FI_DEV_VGPU_LICENSE_STATUS": 1}
    entity = GpuEntity(uuid=L4_UUID, hostname="i-030791dc5a37cd257", gpu=0, pci_bus_id="00000000:31:00.0",
                       model_name="NVIDIA L4", device="nvidia0")  # fmt: skip
    assert {s.entity for s in result.samples} == {entity}
    values = {s.metric: s.value for s in result.samples}
    assert values["DCGM_FI_DEV_POWER_USAGE"] == pytest.approx(16.365)
    assert values["DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"] == 4742776
    assert values["DCGM_FI_DEV_GPU_TEMP"] == 31
    assert values["DCGM_FI_PROF_PIPE_TENSOR_ACTIVE"] == 0.0
    assert values["DCGM_FI_PROF_PCIE_TX_BYTES"] == 112603
    # Line numbers point at the sample lines of the file.
    lines = read("dcgm", "example-scrape-L4-default-counters.prom").split("\n")
    for sample in result.samples:
        assert lines[sample.line - 1].startswith(sample.metric)


def test_t4_scrape_with_grouped_help_lines():
    result = parse(read("dcgm", "example-scrape-T4-gardener.prom"))
    assert [(s.metric, s.value) for s in result.samples] == [
        ("DCGM_FI_DEV_SM_CLOCK", 300),
        ("DCGM_FI_DEV_MEM_CLOCK", 405),
        ("DCGM_FI_DEV_MEMORY_TEMP", 0),
    ]
    assert result.samples[0].entity.hostname == "ip-10-180-14-93.eu-central-1.compute.internal"


def test_snippets_from_issues_quirks():
    result = parse(read("dcgm", "example-snippets-from-issues.prom"))
    assert result.errors == []
    metrics = by_metric(result)
    # INT64 "not supported" sentinel: no data, not an error.
    assert result.skipped_not_supported == 1
    assert "DCGM_FI_DEV_MEMORY_TEMP" not in metrics  # its only line is the sentinel
    assert [s.value for s in metrics["DCGM_FI_DEV_SM_CLOCK"] if s.entity.uuid.startswith("GPU-604a")] == [139]
    # V100: no pci_bus_id, capitalised Hostname.
    v100 = [s for s in metrics["DCGM_FI_DEV_SM_CLOCK"] if s.entity.model_name == "Tesla V100-SXM2-32GB"]
    assert len(v100) == 2
    assert {s.entity.pci_bus_id for s in v100} == {None}
    assert {s.entity.hostname for s in v100} == {"r6i3n0"}
    assert [s.entity.gpu for s in v100] == [0, 1]
    # Lower-case hostname after dcgm-exporter #655.
    rtx = [s for s in metrics["DCGM_FI_DEV_GPU_TEMP"] if s.entity.gpu == 1 and s.entity.hostname]
    assert rtx[0].entity.hostname == "dcgm-exporter-wwwjh"
    assert rtx[0].entity.model_name == "NVIDIA RTX 2000 Ada Generation"
    # MIG: device-level values repeated per instance are kept once per physical GPU.
    a30 = "GPU-265c9814-6156-355b-e589-ff2064894f16"
    power = [s for s in metrics["DCGM_FI_DEV_POWER_USAGE"] if s.entity.uuid == a30]
    temp = [s for s in metrics["DCGM_FI_DEV_GPU_TEMP"] if s.entity.uuid == a30]
    assert len(power) == 1 and len(temp) == 1
    assert power[0].value == pytest.approx(52.636)  # the first instance's copy
    assert power[0].entity.gpu_instance_id is None
    assert result.mig_duplicates_folded == 3  # two extra POWER_USAGE copies, one extra GPU_TEMP copy
    # Per-instance metrics keep the MIG instance.
    (fb,) = metrics["DCGM_FI_DEV_FB_USED"]
    assert (fb.entity.gpu_instance_id, fb.entity.gpu_instance_profile) == (6, "1g.6gb")
    assert fb.value == 3744
    # POWER_MGMT_LIMIT on the V100 node.
    assert [s.value for s in metrics["DCGM_FI_DEV_POWER_MGMT_LIMIT"]] == [300.0, 300.0]


def test_prometheus_text_example_all_unknown_except_the_documented_doc_bug():
    text = read("prometheus", "prometheus-text-0.0.4-example.txt")
    result = parse(text)
    assert result.samples == []
    assert [(e.line, e.reason) for e in result.errors] == [(10, "missing value")]
    # With the value the upstream doc forgot, every series is counted as unknown and nothing is an error.
    fixed = parse(text.replace(DOC_BUG_LINE, DOC_BUG_LINE + " 1"))
    assert fixed.errors == []
    assert fixed.samples == []
    assert fixed.unknown_metrics["my.dotted.metric"] == 1
    assert fixed.unknown_metrics["http_requests_total"] == 2
    assert fixed.unknown_metrics["http_request_duration_seconds_bucket"] == 6
    assert fixed.unknown_metrics["something_weird"] == 1
    assert sum(fixed.unknown_metrics.values()) == 21


def test_openmetrics_example_all_unknown():
    result = parse(read("prometheus", "openmetrics-1.0-example.txt"))
    assert result.errors == []
    assert result.samples == []
    assert result.unknown_metrics["process_cpu_seconds_total"] == 1
    assert result.unknown_metrics["go_goroutines"] == 1
    assert result.unknown_metrics["acme_http_router_request_seconds_created"] == 2
    assert sum(result.unknown_metrics.values()) == 8


def test_grammar_agrees_with_prometheus_client_on_the_real_files():
    parser = pytest.importorskip("prometheus_client.parser")
    om_parser = pytest.importorskip("prometheus_client.openmetrics.parser")
    files = [*sorted((DATA / "dcgm").glob("*.prom")), *sorted((DATA / "prometheus").glob("*.txt"))]
    for path in files:
        text = path.read_text(encoding="utf-8").replace(DOC_BUG_LINE, DOC_BUG_LINE + " 1")
        is_om = "# EOF" in text
        families = (om_parser if is_om else parser).text_string_to_metric_families(text)
        theirs = [(s.name, s.labels, float(s.value), None if s.timestamp is None else float(s.timestamp))
                  for f in families for s in f.samples]  # fmt: skip
        ours = [(name, labels, value, ts) for _, name, labels, value, ts in iter_series(text)]
        assert len(ours) == len(theirs), path.name
        for a, b in zip(ours, theirs, strict=True):
            # prometheus_client renames samples of a "# TYPE x counter" family to x_total; the line says x.
            their_name = b[0][: -len("_total")] if b[0] == a[0] + "_total" else b[0]
            assert (a[0], a[1]) == (their_name, b[1]), path.name
            assert a[2] == b[2] or (math.isnan(a[2]) and math.isnan(b[2])), path.name
            assert a[3] == pytest.approx(b[3]), path.name


# --- label and name quirks ---


def test_lowercase_uuid_and_hostname_labels():
    result = parse('DCGM_FI_DEV_GPU_TEMP{gpu="3",uuid="GPU-x",hostname="n1",model_name="H100"} 40\n')
    (sample,) = result.samples
    assert sample.entity == GpuEntity(uuid="GPU-x", hostname="n1", gpu=3, model_name="H100")


@pytest.mark.parametrize(
    "name",
    ["DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_GPU_TEMP_CELSIUS", "dcgm_gpu_temp"],
)
def test_old_and_new_names_give_the_canonical_metric(name):
    result = parse(f'{name}{{gpu="0",UUID="GPU-a"}} 40\n')
    assert [s.metric for s in result.samples] == ["DCGM_FI_DEV_GPU_TEMP"]


def test_new_clock_event_reason_name_and_bitmask():
    result = parse('DCGM_FI_DEV_CLOCK_THROTTLE_REASONS{gpu="0",UUID="GPU-a"} 96\n')
    assert [(s.metric, s.value) for s in result.samples] == [("DCGM_FI_DEV_CLOCKS_EVENT_REASONS", 96.0)]


def test_label_escapes_and_spaces():
    text = 'DCGM_FI_DEV_GPU_TEMP{ gpu = "0" , UUID="GPU-\\"q\\"\\\\x\\n" , } 41\n'
    (sample,) = parse(text).samples
    assert sample.entity.uuid == 'GPU-"q"\\x\n'


def test_utf8_help_line():
    text = "# HELP DCGM_FI_DEV_GPU_TEMP GPU temperature (in °C).\n# TYPE DCGM_FI_DEV_GPU_TEMP gauge\n" + GOOD
    result = parse(text)
    assert result.errors == [] and len(result.samples) == 1


def test_crlf_and_unicode_line_separators():
    text = GOOD + "\r\n" + 'DCGM_FI_DEV_GPU_TEMP{gpu="1",UUID="GPU-b",Hostname="h\u2028x"} 42\r\n'
    result = parse(text)
    assert result.errors == []
    assert [s.entity.hostname for s in result.samples] == ["h1", "h\u2028x"]


def test_not_supported_sentinels():
    text = "\n".join(
        f'DCGM_FI_DEV_{name}{{gpu="0",UUID="GPU-a"}} {value}'
        for name, value in [
            ("MEMORY_TEMP", "9223372036854775794"),  # INT64 not supported
            ("GPU_TEMP", "9223372036854775792"),  # INT64 blank
            ("POWER_USAGE", "140737488355328"),  # FP64 blank (2**47)
            ("SM_CLOCK", "140737488355330.0"),  # FP64 not supported
            ("MEM_CLOCK", "1215"),
        ]
    )
    result = parse(text)
    assert result.errors == []
    assert result.skipped_not_supported == 4
    assert [s.metric for s in result.samples] == ["DCGM_FI_DEV_MEM_CLOCK"]
    assert is_dcgm_blank(9.223372036854775794e18) and not is_dcgm_blank(2147483632)


def test_duplicates_without_mig_are_folded_and_counted():
    text = (
        'DCGM_FI_DEV_GPU_TEMP{gpu="0",UUID="GPU-a",pod="p1"} 41\n'
        'DCGM_FI_DEV_GPU_TEMP{gpu="0",UUID="GPU-a",pod="p2"} 41\n'
    )
    result = parse(text)
    assert len(result.samples) == 1
    assert result.duplicates_folded == 1 and result.mig_duplicates_folded == 0


def test_timestamps_text_milliseconds_openmetrics_seconds_and_total_suffix():
    text = parse('DCGM_FI_DEV_GPU_TEMP{gpu="0",UUID="GPU-a"} 41 1700000000500\n')
    assert text.samples[0].timestamp == pytest.approx(1_700_000_000.5)
    om = parse(
        "# TYPE DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION counter\n"
        "# UNIT DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION millijoules\n"
        'DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION_total{gpu="0",UUID="GPU-a"} 5000 1700000000.25\n'
        "# EOF\n"
    )
    assert om.errors == []
    assert [(s.metric, s.value, s.timestamp) for s in om.samples] == [
        ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", 5000.0, 1_700_000_000.25)
    ]


def test_openmetrics_exemplar_is_ignored():
    result = parse('DCGM_FI_DEV_PCIE_REPLAY_COUNTER_total{gpu="0",UUID="GPU-a"} 3 # {trace_id="x"} 1\n# EOF\n')
    assert result.errors == []
    assert [s.value for s in result.samples] == [3.0]


def test_non_gpu_series_are_counted_not_dropped():
    text = "go_goroutines 69\nprocess_cpu_seconds_total 4.2\ngo_goroutines 70\nsupply_water_temperature_celsius 30\n"
    result = parse(text)
    assert result.errors == []
    assert result.unknown_metrics == {"go_goroutines": 2, "process_cpu_seconds_total": 1,
                                      "supply_water_temperature_celsius": 1}  # fmt: skip


# --- malformed input: each class is an error naming its line; the other lines still parse ---

MALFORMED = [
    ("DCGM_FI_DEV_GPU_TEMP{gpu=\"0\",UUID=\"GPU-a\"}", "missing value"),
    ('DCGM_FI_DEV_GPU_TEMP{gpu="0",UUID="GPU-a"} abc', "invalid value"),
    ('DCGM_FI_DEV_GPU_TEMP{gpu="0",UUID="GPU-a"} 1_0', "invalid value"),
    ('DCGM_FI_DEV_GPU_TEMP{gpu=0,UUID="GPU-a"} 40', "not quoted"),
    ('DCGM_FI_DEV_GPU_TEMP{gpu="0",UUID="GPU-a" 40', "expected ',' or '}'"),
    ('DCGM_FI_DEV_GPU_TEMP{gpu="0,UUID=GPU-a} 40', "unterminated"),
    ('DCGM_FI_DEV_GPU_TEMP{gpu="0",gpu="1",UUID="GPU-a"} 40', "duplicate label"),
    ('DCGM_FI_DEV_GPU_TEMP{,} 40', "expected a label name"),
    ('9DCGM{gpu="0"} 40', "invalid metric name"),
    ('DCGM_FI_DEV_GPU_TEMP{gpu="0",UUID="GPU-a"} 40 1 2', "unexpected text"),
    ('DCGM_FI_DEV_GPU_TEMP{gpu="0",UUID="GPU-a"} 40 1.5', "invalid timestamp"),
    ('DCGM_FI_DEV_GPU_TEMP{gpu="0",UUID="GPU-a"} 40 # {a="b"} 1', "unexpected text"),
    ("# TYPE DCGM_FI_DEV_GPU_TEMP thermometer", "invalid metric type"),
    ("# HELP", "without a metric name"),
    ('DCGM_FI_DEV_GPU_TEMP{gpu="0",UUID="GPU-a"} NaN', "NaN is not allowed"),
    ('DCGM_FI_DEV_GPU_TEMP{gpu="0",UUID="GPU-a"} +Inf', "inf is not allowed"),
    ('DCGM_FI_DEV_GPU_TEMP{gpu="0",UUID="GPU-a"} 1000', "above the plausible maximum"),
    ('DCGM_FI_PROF_PIPE_TENSOR_ACTIVE{gpu="0",UUID="GPU-a"} 42', "above the plausible maximum"),
    ('DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{gpu="0",UUID="GPU-a"} -5', "below the plausible minimum"),
    ('DCGM_FI_DEV_CLOCKS_EVENT_REASONS{gpu="0",UUID="GPU-a"} 1.5', "not an integer"),
    ('DCGM_FI_DEV_GPU_TEMP{gpu="zero",UUID="GPU-a"} 40', "not an integer"),
    ('DCGM_FI_DEV_GPU_TEMP{Hostname="h"} 40', "no GPU identity"),
]


@pytest.mark.parametrize(("bad", "reason"), MALFORMED, ids=[r for _, r in MALFORMED])
def test_malformed_line_is_an_error_with_its_line_number(bad, reason):
    text = "# HELP DCGM_FI_DEV_GPU_TEMP GPU temperature (in °C).\n" + GOOD + "\n" + bad + "\n" + GOOD_2
    result = parse(text)
    assert len(result.errors) == 1, result.errors
    (error,) = result.errors
    assert error.line == 3
    assert reason in error.reason
    assert error.text == bad
    assert str(error).startswith("line 3: ")
    assert [s.line for s in result.samples] == [2, 4]  # the good lines around it still parse


def test_error_text_is_truncated():
    result = parse('DCGM_FI_DEV_GPU_TEMP{gpu="0",UUID="' + "x" * 5000 + '"} abc')
    assert len(result.errors[0].text) <= 200


def test_openmetrics_content_after_eof_and_missing_eof():
    after = parse(GOOD + "\n# EOF\n" + GOOD + "\n")
    assert [(e.line, e.reason) for e in after.errors] == [(3, "content after # EOF")]
    missing = parse(GOOD + "\n", openmetrics=True)
    assert [e.reason for e in missing.errors] == ["OpenMetrics exposition does not end with # EOF"]


def test_empty_input():
    result = parse("")
    assert result.ok and result.samples == [] and not result.unknown_metrics


# --- robustness ---

_ALPHABET = st.sampled_from([*'abcDCGM_FI{}=",# \t\n\\.0123456789eE+-NaInf°\u2028\r', "GPU_TEMP", "UUID"])


@settings(max_examples=300, deadline=None, database=None)
@given(st.text())
def test_random_text_never_raises(text):
    result = parse_exposition(text, default_timestamp=0.0)
    assert isinstance(result, ParseResult)
    n_lines = text.count("\n") + 1
    assert all(e.line is not None and 1 <= e.line <= n_lines for e in result.errors)


@settings(max_examples=500, deadline=None, database=None)
@given(st.lists(_ALPHABET, max_size=80).map("".join))
def test_exposition_shaped_garbage_never_raises(text):
    result = parse_exposition("DCGM_FI_DEV_GPU_TEMP{" + text, default_timestamp=0.0)
    for sample in result.samples:
        assert math.isfinite(sample.value)


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@settings(max_examples=200, deadline=None, database=None)
@given(
    value=st.floats(allow_nan=True, allow_infinity=True),
    gpu=st.integers(min_value=0, max_value=64),
    labels=st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True), st.text(max_size=10), max_size=4),
)
def test_well_formed_lines_are_sample_error_or_sentinel(value, gpu, labels):
    labels.pop("gpu", None)
    escaped = ",".join(f'{k}="{escape(v)}"' for k, v in labels.items())
    line = f'DCGM_FI_DEV_POWER_USAGE{{gpu="{gpu}",UUID="GPU-z"{"," if escaped else ""}{escaped}}} {value!r}'
    result = parse_exposition(line.replace("nan", "NaN").replace("inf", "Inf"), default_timestamp=0.0)
    assert len(result.samples) + len(result.errors) + result.skipped_not_supported == 1
    if result.samples:
        assert result.samples[0].value == value
        assert result.samples[0].entity.gpu == gpu
