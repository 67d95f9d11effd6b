"""Building dcgm-exporter scrapes and sources for the telemetry tests."""

from facility.models import GPU, Site
from telemetry.models import Source


def make_source(kind="dcgm", name=None, site=None, **fields):
    site = site or Site.objects.get(slug="demo")
    source = Source(name=name or f"{kind}-source", kind=kind, site=site, **fields)
    token = source.issue_token()
    source.save()
    return source, token


def dcgm_scrape(gpus, *, ts_ms: int | None = None, temp=60.0, host_label="Hostname", energy=1_000_000) -> str:
    """A dcgm-exporter /metrics body for these GPUs, labelled as dcgm-exporter labels them."""
    lines = [
        "# HELP DCGM_FI_DEV_GPU_TEMP GPU temperature (in C).", "# TYPE DCGM_FI_DEV_GPU_TEMP gauge",
    ]
    stamp = f" {ts_ms}" if ts_ms is not None else ""
    for metric, value in (
        ("DCGM_FI_DEV_GPU_TEMP", temp), ("DCGM_FI_DEV_POWER_USAGE", 612.5), ("DCGM_FI_DEV_SM_CLOCK", 1980),
        ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", energy),
    ):
        for g in gpus:
            labels = (f'gpu="{g.index}",UUID="{g.uuid}",pci_bus_id="{g.pci_bus_id}",device="nvidia{g.index}",'
                      f'modelName="{g.model}",{host_label}="{g.node.hostname}"')
            lines.append(f"{metric}{{{labels}}} {value}{stamp}")
    return "\n".join(lines) + "\n"


def demo_gpus(n=8):
    return list(GPU.objects.select_related("node").order_by("node__hostname", "index")[:n])
