"""The digital twin: GPUs, nodes and plant of one facility, stepped at 1 s (TWIN.md).

    twin = Twin(layout_from_facility(data), profile="seed",
                scenario=Scenario(workload="training", climate="mixed", seed=1))
    twin.step(60)
    twin.write_setpoint("crah-a1", "supply_air_temperature_setpoint", 22.0)
    gpus = twin.gpus()          # numpy arrays in `twin.gpu_uuids` order
    units = twin.units()        # {unit name: {point: value}}
    totals = twin.facility()

Each step: weather and workload advance; setpoint read-backs and fan duties follow their commands; the
GPUs step against the coolant temperatures and flows the plant held at the start of the step; node
heat goes to the CRAHs (air) and CDUs (liquid); the plant steps. Deterministic for a seed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from .gpu import GpuBank
from .layout import Layout, layout_from_facility
from .params import DEFAULT_PROFILE, Profile, load_profile
from .plant import Plant
from .state import SERVER_FAN_RANGE, SERVER_FAN_SPEED, SERVER_FANS
from .weather import hour_of_year, load_climate
from .workload import WorkloadTrace

FAN_DUTY_MIN, FAN_DUTY_MAX = SERVER_FAN_RANGE
DEFAULT_FAN_DUTY = 0.8

# DCGM field name -> key of `Twin.gpus()`.
DCGM_FIELDS = {
    "DCGM_FI_DEV_GPU_TEMP": "temperature_celsius",
    "DCGM_FI_DEV_MEMORY_TEMP": "memory_temperature_celsius",
    "DCGM_FI_DEV_POWER_USAGE": "power_watts",
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": "energy_millijoules",
    "DCGM_FI_DEV_SM_CLOCK": "sm_clock_mhz",
    "DCGM_FI_DEV_MEM_CLOCK": "memory_clock_mhz",
    "DCGM_FI_DEV_GPU_UTIL": "utilization_percent",
    "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE": "tensor_active_ratio",
    "DCGM_FI_DEV_CLOCKS_EVENT_REASONS": "clocks_event_reasons",
    "DCGM_FI_DEV_THERMAL_VIOLATION": "thermal_violation_microseconds",
    "DCGM_FI_DEV_POWER_VIOLATION": "power_violation_microseconds",
    "DCGM_FI_DEV_POWER_MGMT_LIMIT": "power_cap_watts",
}


@dataclass(frozen=True)
class Scenario:
    """Disturbances of a run. `workload` is one of training, inference, burn, idle, or {hall: workload}
    (halls not named run training). `climate` None uses the site's; `outdoor` = (dry-bulb, wet-bulb)
    holds the weather constant instead of the EPW year. `start` is local time."""

    workload: str | Mapping[str, str] = "training"
    climate: str | None = None
    start: datetime = datetime(2025, 7, 1)
    seed: int = 0
    outdoor: tuple[float, float] | None = None
    mfu: float = 0.4
    checkpoint_interval_s: float = 1800.0
    checkpoint_duration_s: float = 60.0


@dataclass(frozen=True)
class GpuInfo:
    uuid: str
    index: int
    pci_bus_id: str
    model: str
    hostname: str
    rack: str
    hall: str


@dataclass
class Snapshot:
    time: datetime
    elapsed_s: float
    gpus: dict[str, np.ndarray]
    units: dict[str, dict[str, float]]
    halls: dict[str, dict[str, float]]
    facility: dict[str, float] = field(default_factory=dict)


class Twin:
    """A facility's digital twin. `layout` is a Layout or a facility-file dict."""

    def __init__(self, layout: Layout | Mapping, profile: str | Profile = DEFAULT_PROFILE,
                 scenario: Scenario | None = None):
        self.layout = layout if isinstance(layout, Layout) else layout_from_facility(layout)
        self.profile = load_profile(profile) if isinstance(profile, str) else profile
        self.scenario = scenario or Scenario()
        g, nd, pp = self.profile.gpu, self.profile.node, self.profile.plant
        lay = self.layout

        # Flatten halls -> racks -> nodes -> GPUs; this order is fixed for the twin's life.
        self.hall_names = [h.name for h in lay.halls]
        infos, rack_units, rack_hall, node_rack, node_ngpu, gpu_node, rear, front_of = [], [], [], [], [], [], [], []
        rack_offset = []
        for h in lay.halls:
            for r in h.racks:
                rack_units.append(r.cooled_by)
                rack_hall.append(h.name)
                rack_offset.append(pp.inlet_offset_contained_k if h.contained else pp.inlet_offset_open_k)
                for n in r.nodes:
                    node_rack.append(len(rack_units) - 1)
                    node_ngpu.append(len(n.gpus))
                    half = len(n.gpus) // 2
                    first = len(infos)
                    for pos, gp in enumerate(n.gpus):
                        is_rear = pos >= len(n.gpus) - half
                        rear.append(is_rear)
                        front_of.append(first + pos - (len(n.gpus) - half) if is_rear else -1)
                        gpu_node.append(len(node_ngpu) - 1)
                        infos.append(GpuInfo(gp.uuid, gp.index, gp.pci_bus_id, gp.model, n.hostname, r.name, h.name))
        self.gpu_info = tuple(infos)
        self.gpu_uuids = tuple(i.uuid for i in infos)
        self.hostnames = tuple(n.hostname for h in lay.halls for r in h.racks for n in r.nodes)
        n_gpus, n_nodes, n_racks = len(infos), len(node_ngpu), len(rack_units)
        hall_index = {name: i for i, name in enumerate(self.hall_names)}
        self._rack_hall = np.array([hall_index[h] for h in rack_hall], dtype=np.int64)
        self._rack_offset = np.array(rack_offset, dtype=float)
        self._node_rack = np.array(node_rack, dtype=np.int64)
        self._node_hall = self._rack_hall[self._node_rack] if n_nodes else np.zeros(0, np.int64)
        self._node_ngpu = np.array(node_ngpu, dtype=float)
        self._gpu_node = np.array(gpu_node, dtype=np.int64)
        self._gpu_rack = self._node_rack[self._gpu_node] if n_gpus else np.zeros(0, np.int64)
        hall_liquid = np.array([h.cooling_type == "liquid" for h in lay.halls], dtype=bool)
        self._node_liquid = hall_liquid[self._node_hall] if n_nodes else np.zeros(0, bool)
        liquid = hall_liquid[self._rack_hall[self._gpu_rack]] if n_gpus else np.zeros(0, bool)
        node_nameplate_kw = (self._node_ngpu * g.p_cap_w + nd.p_host_w + nd.p_fan_air_max_w) / nd.eta_psu / 1000
        rack_nameplate_kw = np.bincount(self._node_rack, node_nameplate_kw, minlength=n_racks)
        rack_gpus = np.bincount(self._node_rack, self._node_ngpu, minlength=n_racks)

        self.plant = Plant(lay, pp, rack_units, rack_hall, rack_gpus, rack_nameplate_kw, g.water_kg_s)
        self.bank = GpuBank(g, liquid, np.array(rear, bool), np.array(front_of, np.int64),
                            t_init_c=self._initial_coolant(liquid))

        # Workload per hall.
        w = self.scenario.workload
        kinds = [w if isinstance(w, str) else w.get(i.hall, "training") for i in infos]
        if not isinstance(w, str):
            for name in w:
                if name not in hall_index:
                    raise ValueError(f"scenario workload names unknown hall {name!r}")
        self.workload = WorkloadTrace(
            kinds, self._rack_hall[self._gpu_rack], len(self.hall_names), seed=self.scenario.seed,
            mfu=self.scenario.mfu, tflops_fp32=g.tflops_fp32, tflops_bf16=g.tflops_bf16,
            checkpoint_interval_s=self.scenario.checkpoint_interval_s,
            checkpoint_duration_s=self.scenario.checkpoint_duration_s,
        )
        self.weather = None if self.scenario.outdoor else load_climate(self.scenario.climate or lay.climate)
        self._hour0 = hour_of_year(self.scenario.start)

        self.fan_duty_command = np.full(len(self.hall_names), DEFAULT_FAN_DUTY)
        # A hall with a `server_fans` unit takes its fan duty from that unit's setpoint (a control point like
        # any other); a hall without one keeps the BMC default, or what `set_fan_duty` sets.
        sps = self.plant.setpoints
        self._fan_units = {u.name: hall_index[u.hall] for u in lay.units if u.kind == SERVER_FANS}
        self._fan_points = [(h, sps.find(name, SERVER_FAN_SPEED)) for name, h in self._fan_units.items()]
        for h, i in self._fan_points:
            self.fan_duty_command[h] = sps.command[i]
        self.fan_duty = self.fan_duty_command.copy()
        self.elapsed_s = 0.0
        self._workload_version = -1
        self._flow_key = None
        self._t_cool = np.empty(n_gpus)
        self._host_w = np.zeros(n_nodes)
        self.node_power_w = np.zeros(n_nodes)
        self.server_fan_kw = 0.0  # the nodes' fans (in their IT power), through the PSUs
        self.node_gpu_power_w = np.zeros(n_nodes)
        self._outdoor = self._outdoor_at(0.0)

    def _initial_coolant(self, liquid: np.ndarray) -> np.ndarray:
        air = self.plant.rack_supply_air_c() + self._rack_offset
        water = self.plant.rack_liquid_supply_c()
        return np.where(liquid, water[self._gpu_rack], air[self._gpu_rack])

    # --- time ---

    @property
    def time(self) -> datetime:
        return self.scenario.start + timedelta(seconds=self.elapsed_s)

    def _outdoor_at(self, elapsed_s: float) -> tuple[float, float]:
        if self.scenario.outdoor is not None:
            return float(self.scenario.outdoor[0]), float(self.scenario.outdoor[1])
        return self.weather.at(self._hour0 + elapsed_s / 3600.0)

    def step(self, n: int = 1, dt: float = 1.0) -> None:
        """Advance n steps of dt seconds (1 s is the calibrated step)."""
        for _ in range(int(n)):
            self._step(dt)

    def _step(self, dt: float) -> None:
        nd, pp, g = self.profile.node, self.profile.plant, self.profile.gpu
        plant, bank = self.plant, self.bank
        local_hour = (self.scenario.start.hour + self.scenario.start.minute / 60 + self.elapsed_s / 3600.0) % 24
        self.workload.update(self.elapsed_s, local_hour)
        for h, i in self._fan_points:
            self.fan_duty_command[h] = plant.setpoints.command[i]
        self.fan_duty += (self.fan_duty_command - self.fan_duty) * (1.0 - math.exp(-dt / pp.server_fan_tau_s))

        # Boundary conditions per rack -> per GPU.
        rack_liquid = plant.rack_liquid
        rack_t = np.where(rack_liquid, plant.rack_liquid_supply_c(), plant.rack_supply_air_c() + self._rack_offset)
        duty_ratio = self.fan_duty[self._rack_hall] / g.fan_duty_ref
        flow = np.where(rack_liquid, plant.rack_flow_ratio(), 1.0)
        c = g.liquid_convective_fraction
        m_scale = np.where(rack_liquid, flow, duty_ratio)
        r_scale = np.where(rack_liquid, (1 - c) + c * flow**-g.flow_exponent, duty_ratio**-g.flow_exponent)
        key = (r_scale.tobytes(), m_scale.tobytes())
        if key != self._flow_key:
            self._flow_key = key
            bank.set_flow(r_scale[self._gpu_rack], m_scale[self._gpu_rack])
        np.take(rack_t, self._gpu_rack, out=self._t_cool)

        bank.step(dt, self.workload.u, self.workload.tflops_max, self._t_cool, self.workload.version)

        # Nodes: (sum P_gpu + P_host + P_fan) / eta_psu; GPU heat of liquid nodes goes to the CDUs.
        n_nodes = len(self._node_ngpu)
        if self.workload.version != self._workload_version:
            self._workload_version = self.workload.version
            u_node = np.bincount(self._gpu_node, self.workload.u, minlength=n_nodes) / np.maximum(self._node_ngpu, 1)
            self._host_w = nd.p_host_w * (nd.host_idle_share + (1 - nd.host_idle_share) * u_node)
        gpu_w = np.bincount(self._gpu_node, bank.power_w, minlength=n_nodes)
        node_duty = self.fan_duty[self._node_hall]
        fan_w = np.where(self._node_liquid, nd.p_fan_liquid_w, nd.p_fan_air_max_w * node_duty**3)
        node_w = (gpu_w + self._host_w + fan_w) / nd.eta_psu
        self.server_fan_kw = float(fan_w.sum()) / nd.eta_psu / 1000
        self.node_power_w, self.node_gpu_power_w = node_w, gpu_w
        liquid_w = np.where(self._node_liquid, gpu_w, 0.0)
        n_racks = len(rack_liquid)
        rack_liquid_kw = np.bincount(self._node_rack, liquid_w, minlength=n_racks) / 1000
        rack_air_kw = np.bincount(self._node_rack, node_w - liquid_w, minlength=n_racks) / 1000
        node_air = np.where(self._node_liquid, pp.liquid_node_air_kg_s,
                            self._node_ngpu * g.air_kg_s * node_duty / g.fan_duty_ref)
        rack_air_kg_s = np.bincount(self._node_rack, node_air, minlength=n_racks)

        self._outdoor = self._outdoor_at(self.elapsed_s)
        plant.step(dt, rack_air_kw, rack_liquid_kw, rack_air_kg_s, *self._outdoor)
        for h, i in self._fan_points:  # the fans' read-back is the duty they run at
            plant.setpoints.value[i] = self.fan_duty[h]
        self.elapsed_s += dt

    # --- commands ---

    def write_setpoint(self, unit: str, name: str, value: float) -> None:
        """Command a setpoint; the plant follows with its dynamics. ValueError outside its allowable range."""
        self.plant.setpoints.write(unit, name, value)

    def read_setpoint(self, unit: str, name: str) -> float:
        """The setpoint's read-back (it follows the last command with a lag)."""
        sps = self.plant.setpoints
        return float(sps.value[sps.find(unit, name)])

    def setpoint_command(self, unit: str, name: str) -> float:
        sps = self.plant.setpoints
        return float(sps.command[sps.find(unit, name)])

    def setpoints(self) -> list[dict]:
        """Every setpoint: unit, name, unit of measure, command, read-back, allowable range."""
        sps = self.plant.setpoints
        return [
            {"unit": u, "name": n, "measure": sps.units[i], "command": float(sps.command[i]),
             "value": float(sps.value[i]), "allowable_min": float(sps.lo[i]), "allowable_max": float(sps.hi[i])}
            for (u, n), i in sps.index.items()
        ]

    def _hall(self, hall: str) -> int:
        try:
            return self.hall_names.index(hall)
        except ValueError:
            raise KeyError(f"no hall {hall!r}; halls are {', '.join(self.hall_names)}") from None

    def set_fan_duty(self, hall: str, duty: float) -> None:
        """Server fan duty of every node in `hall` (0.2-1.0); fans follow within seconds."""
        duty = float(duty)
        if not FAN_DUTY_MIN <= duty <= FAN_DUTY_MAX:
            raise ValueError(f"fan duty {duty} lies outside [{FAN_DUTY_MIN}, {FAN_DUTY_MAX}]")
        h = self._hall(hall)
        for unit, fan_hall in self._fan_units.items():
            if fan_hall == h:  # the hall's fans are a control point: command it there
                self.plant.setpoints.write(unit, SERVER_FAN_SPEED, duty)
        self.fan_duty_command[h] = duty

    def read_fan_duty(self, hall: str) -> float:
        return float(self.fan_duty[self._hall(hall)])

    def _select(self, uuids) -> np.ndarray | slice:
        if uuids is None:
            return slice(None)
        index = {u: i for i, u in enumerate(self.gpu_uuids)}
        try:
            return np.array([index[u] for u in uuids], dtype=np.int64)
        except KeyError as e:
            raise KeyError(f"unknown GPU uuid {e.args[0]!r}") from None

    def set_power_cap(self, watts: float, uuids=None) -> None:
        """GPU power cap (200-700 W) for the GPUs with these uuids (all if None)."""
        g = self.profile.gpu
        if not g.p_cap_min_w <= watts <= g.p_cap_w:
            raise ValueError(f"power cap {watts} W lies outside [{g.p_cap_min_w:g}, {g.p_cap_w:g}]")
        self.bank.p_cap[self._select(uuids)] = watts

    def fail_unit(self, name: str, failed: bool = True) -> None:
        """Fault injection: a CRAH/CRAC, CDU, chiller or tower stops cooling (failed=False restores it)."""
        self.plant.set_failed(name, failed)

    def reset_gpus(self, uuids=None) -> None:
        """Power-cycle shut-down GPUs (clears the 92 C latch)."""
        self.bank.reset(self._select(uuids) if uuids is not None else None)

    # --- read-out ---

    def gpus(self) -> dict[str, np.ndarray]:
        """Per-GPU values of the last step (copies), in `gpu_uuids` order."""
        b, g = self.bank, self.profile.gpu
        up = ~b.shutdown
        return {
            "temperature_celsius": b.tj.copy(),
            "memory_temperature_celsius": b.tmem.copy(),
            "power_watts": b.power_w.copy(),
            "energy_millijoules": np.floor(b.energy_mj).astype(np.int64),
            "sm_clock_mhz": np.where(up, b.phi * g.sm_clock_max_mhz, 0.0),
            "memory_clock_mhz": np.where(up, g.memory_clock_mhz, 0.0),
            "utilization_percent": np.where(up, 100.0 * b.u, 0.0),
            "tensor_active_ratio": np.where(up, b.u * self.workload.tensor_share, 0.0),
            "clocks_event_reasons": b.clocks_event_reasons(),
            "thermal_violation_microseconds": np.floor(b.thermal_violation_us).astype(np.int64),
            "power_violation_microseconds": np.floor(b.power_violation_us).astype(np.int64),
            "power_cap_watts": b.p_cap.copy(),
            "tflops": b.tflops(),
            "clock_fraction": b.phi.copy(),
            "shutdown": b.shutdown.copy(),
        }

    def units(self) -> dict[str, dict[str, float]]:
        """Per cooling unit its points; a `server_fans` unit reports the duty its hall's fans run at (their
        power is in the nodes' IT power, not the cooling plant's)."""
        out = self.plant.unit_points()
        for name, h in self._fan_units.items():
            out[name] = {"fan_speed_ratio": float(self.fan_duty[h]), **self.plant.setpoint_points(name)}
        return out

    def halls(self) -> dict[str, dict[str, float]]:
        """Per hall: IT power, GPU and server-inlet figures, fan duty."""
        b = self.bank
        rack_air = self.plant.rack_supply_air_c() + self._rack_offset
        out = {}
        for i, name in enumerate(self.hall_names):
            gm = self._rack_hall[self._gpu_rack] == i
            nm = self._node_hall == i
            rm = self._rack_hall == i
            out[name] = {
                "it_power_kw": float(self.node_power_w[nm].sum() / 1000),
                "server_inlet_temperature_celsius": float(rack_air[rm].mean()) if rm.any() else float("nan"),
                "gpu_temperature_celsius_max": float(b.tj[gm].max()) if gm.any() else float("nan"),
                "gpu_temperature_celsius_mean": float(b.tj[gm].mean()) if gm.any() else float("nan"),
                "tflops": float(b.tflops()[gm].sum()),
                "gpus_throttling": int(((b.phi < 0.98) & ~b.shutdown & gm).sum()),
                "fan_duty_ratio": float(self.fan_duty[i]),
            }
        return out

    def facility(self) -> dict[str, float]:
        """Site totals of the last step."""
        b = self.bank
        it_kw = float(self.node_power_w.sum() / 1000)
        cooling_kw = self.plant.cooling_kw
        losses_kw = self.plant.losses_kw(it_kw)
        total_kw = it_kw + cooling_kw + losses_kw
        tflops = float(b.tflops().sum())
        return {
            "it_power_kw": it_kw,
            "server_fan_power_kw": self.server_fan_kw,  # part of IT power: cooling work done inside the servers
            "cooling_power_kw": cooling_kw,
            "losses_kw": losses_kw,
            "facility_power_kw": total_kw,
            "pue": total_kw / it_kw if it_kw > 0 else float("nan"),
            "tflops": tflops,
            "tflops_per_kw": tflops / total_kw if total_kw > 0 else 0.0,
            "gpus_throttling": int(((b.phi < 0.98) & ~b.shutdown).sum()),
            "gpus_shutdown": int(b.shutdown.sum()),
            "shutdown_events": int(b.shutdown_events),
            "gpu_temperature_celsius_max": float(b.tj.max()) if b.n else float("nan"),
            "outdoor_dry_bulb_celsius": self._outdoor[0],
            "outdoor_wet_bulb_celsius": self._outdoor[1],
        }

    def snapshot(self) -> Snapshot:
        return Snapshot(self.time, self.elapsed_s, self.gpus(), self.units(), self.halls(), self.facility())
