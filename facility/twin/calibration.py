"""Calibration against "Cooling Matters" (Latif et al., arXiv 2507.16781), TWIN.md "Published measurements".

Two 8xH100 HGX nodes under GPU-Burn (FP32, u = 1): one air-cooled at inlet 25 C and fan duty 0.8, one
liquid-cooled at supply 25 C and nominal flow; values at steady state after 900 s. The experiment drives
the GPU model directly with those boundary conditions (no plant in between).
"""

from __future__ import annotations

import numpy as np

from .gpu import GpuBank
from .params import load_profile

PUBLISHED = {
    "air": {"gpu_temp_c_min": 54.0, "gpu_temp_c_max": 72.0, "tflops_per_gpu": 46.0, "node_power_kw": 8.16,
            "tflops_per_gpu_per_node_kw": 5.6},
    "liquid": {"gpu_temp_c_min": 41.0, "gpu_temp_c_max": 50.0, "tflops_per_gpu": 54.0, "node_power_kw": 6.99,
               "tflops_per_gpu_per_node_kw": 7.7},
}
CALIBRATION_INLET_C = 25.0
CALIBRATION_FAN_DUTY = 0.8
CALIBRATION_SECONDS = 900


def published() -> dict:
    """The paper's values, in the shape `calibrate` returns (without "profile")."""
    return {k: dict(v) for k, v in PUBLISHED.items()}


def calibrate(profile: str = "seed", seconds: int = CALIBRATION_SECONDS) -> dict:
    """Run the air-vs-liquid experiment with `profile` and return the model's values."""
    prof = load_profile(profile)
    g, nd = prof.gpu, prof.node
    gpus_per_node = 8
    liquid = np.repeat([False, True], gpus_per_node)
    local = np.tile(np.arange(gpus_per_node), 2)
    rear = local >= gpus_per_node // 2
    front_of = np.where(rear, np.arange(2 * gpus_per_node) - gpus_per_node // 2, -1)
    bank = GpuBank(g, liquid, rear, front_of, t_init_c=CALIBRATION_INLET_C)
    duty_ratio = CALIBRATION_FAN_DUTY / g.fan_duty_ref
    r_scale = np.where(liquid, 1.0, duty_ratio ** -g.flow_exponent)
    m_scale = np.where(liquid, 1.0, duty_ratio)
    bank.set_flow(r_scale, m_scale)
    u = np.ones(2 * gpus_per_node)
    tf_max = np.full(2 * gpus_per_node, g.tflops_fp32)
    inlet = np.full(2 * gpus_per_node, CALIBRATION_INLET_C)
    for _ in range(seconds):
        bank.step(1.0, u, tf_max, inlet)

    out = {"profile": prof.name}
    fans = {"air": nd.p_fan_air_max_w * CALIBRATION_FAN_DUTY**3, "liquid": nd.p_fan_liquid_w}
    for i, kind in enumerate(("air", "liquid")):
        sl = slice(i * gpus_per_node, (i + 1) * gpus_per_node)
        node_kw = (bank.power_w[sl].sum() + nd.p_host_w + fans[kind]) / nd.eta_psu / 1000.0
        tflops = float(bank.tflops()[sl].mean())
        out[kind] = {
            "gpu_temp_c_min": float(bank.tj[sl].min()),
            "gpu_temp_c_max": float(bank.tj[sl].max()),
            "tflops_per_gpu": tflops,
            "node_power_kw": float(node_kw),
            "tflops_per_gpu_per_node_kw": tflops / float(node_kw),
        }
    return out


def comparison_rows(result: dict) -> list[tuple[str, str, float, float, float]]:
    """(cooling, key, model, published, relative error) for every published value."""
    rows = []
    for kind, values in PUBLISHED.items():
        for key, ref in values.items():
            model = result[kind][key]
            rows.append((kind, key, model, ref, (model - ref) / ref))
    return rows


def format_comparison(result: dict) -> str:
    """A table of model vs published with relative errors, plus the honest node figure."""
    lines = [f"profile {result['profile']}: model vs 'Cooling Matters' (arXiv 2507.16781)",
             f"{'cooling':8} {'value':28} {'model':>9} {'paper':>9} {'error':>8}"]
    for kind, key, model, ref, err in comparison_rows(result):
        lines.append(f"{kind:8} {key:28} {model:9.2f} {ref:9.2f} {err:+8.1%}")
    for kind in ("air", "liquid"):
        r = result[kind]
        lines.append(f"{kind:8} {'node TFLOPS per node kW':28} {8 * r['tflops_per_gpu'] / r['node_power_kw']:9.2f}"
                     "   (sum over the node's 8 GPUs / node kW)")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    for name in sys.argv[1:] or ["seed", "physics"]:
        print(format_comparison(calibrate(name)))
        print()
