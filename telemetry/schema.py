"""How catalogue metrics map onto storage: the wide per-GPU row's columns, in one place."""

from telemetry.catalogue import HOT_GPU_METRICS

# Column of the wide GPU row for each hot DCGM metric (catalogue order is storage order).
GPU_COLUMNS: dict[str, str] = dict(
    zip(
        HOT_GPU_METRICS,
        (
            "gpu_temp", "memory_temp", "power_usage", "total_energy", "sm_clock", "mem_clock", "gpu_util",
            "tensor_active", "clocks_event_reasons", "power_violation", "thermal_violation", "tflops",
        ),
        strict=True,
    )
)
METRIC_OF_COLUMN = {column: metric for metric, column in GPU_COLUMNS.items()}
# Counters and bitmasks are exact integers; everything else is a float.
INTEGER_COLUMNS = frozenset({"total_energy", "clocks_event_reasons", "power_violation", "thermal_violation"})
