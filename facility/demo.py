"""The demo facility: two halls (air with CRAHs and a chiller, direct-liquid with CDUs and a tower).

`facility/demo_facility.yaml` is this function's output at the default size and is what `seed_demo`
imports; users start from that file. Benchmarks call the function with more racks.
"""

import uuid

from facility.facility_file import FORMAT
from facility.twin.state import (
    CDU_PUMP_SPEED,
    CDU_SECONDARY_SUPPLY,
    CHILLED_WATER,
    CRAH_SUPPLY_AIR,
    SERVER_FAN_SPEED,
    TOWER_LEAVING_WATER,
)

# PCI bus ids of the eight SXM GPUs on an HGX H100 baseboard, in DCGM index order.
HGX_PCI_BUSES = ("18", "2a", "3a", "5d", "9a", "ab", "ba", "db")
_UUID_NAMESPACE = uuid.UUID("6f1d1c5e-7a1b-4d59-9d0e-2f3c5b8a9e10")


def _setpoint(name, unit, value, lo, hi, step, rate, dwell):
    return {
        "name": name, "unit": unit, "value": value, "allowable_min": lo, "allowable_max": hi,
        "max_step": step, "max_rate_per_minute": rate, "min_dwell_seconds": dwell,
    }


def _node(hostname: str, slot: int) -> dict:
    return {
        "hostname": hostname,
        "slot": slot,
        "model": "HGX H100 8-GPU",
        "gpus": [
            {
                "index": i,
                "uuid": f"GPU-{uuid.uuid5(_UUID_NAMESPACE, f'{hostname}/{i}')}",
                "model": "NVIDIA H100 80GB HBM3",
                "pci_bus_id": f"00000000:{bus.upper()}:00.0",
            }
            for i, bus in enumerate(HGX_PCI_BUSES)
        ],
    }


def _crah(name: str, hall: str, supply_air_c: float) -> dict:
    return {
        "name": name, "kind": "crah", "hall": hall, "supply_loop": None, "return_loop": "chw-1",
        "capacity_kw": 60.0,
        "setpoints": [_setpoint(CRAH_SUPPLY_AIR, "celsius", supply_air_c, 16, 27, 1.0, 0.5, 300)],
    }


def _cdu(name: str, loop: str) -> dict:
    return {
        "name": name, "kind": "cdu", "hall": "hall-b", "supply_loop": loop, "return_loop": "fws-1",
        "capacity_kw": 150.0,
        "setpoints": [
            _setpoint(CDU_SECONDARY_SUPPLY, "celsius", 25.0, 20, 45, 2.0, 1.0, 120),
            _setpoint(CDU_PUMP_SPEED, "ratio", 1.0, 0.3, 1.2, 0.1, 0.2, 60),
        ],
    }


def _server_fans(name: str, hall: str) -> dict:
    """The hall's server fans as one point: BMC default duty 0.8; the floor of 0.4 keeps NICs, DIMMs and power
    supplies (which the twin does not model) in moving air."""
    return {
        "name": name, "kind": "server_fans", "hall": hall, "supply_loop": None, "return_loop": None,
        "capacity_kw": None, "setpoints": [_setpoint(SERVER_FAN_SPEED, "ratio", 0.8, 0.4, 1.0, 0.1, 0.2, 60)],
    }


def build_demo_facility(air_racks: int = 8, liquid_racks: int = 4) -> dict:
    """A facility-file dict: `air_racks` racks of 2 nodes and `liquid_racks` racks of 4 nodes, 8 GPUs each."""
    air_hall = {
        "name": "hall-a", "cooling_type": "air", "contained": True,
        "racks": [
            {
                "name": f"a-r{r:02d}", "row": 1 + (r - 1) // 4, "position": 1 + (r - 1) % 4,
                "cooled_by": ["crah-a1", "crah-a2", "crah-a3", "crah-a4"],
                "nodes": [_node(f"a-r{r:02d}-n{n}", n) for n in (1, 2)],
            }
            for r in range(1, air_racks + 1)
        ],
    }
    liquid_hall = {
        "name": "hall-b", "cooling_type": "liquid", "contained": True,
        "racks": [
            {
                "name": f"b-r{r:02d}", "row": 1, "position": r,
                "cooled_by": ["cdu-b1" if r <= (liquid_racks + 1) // 2 else "cdu-b2", "crah-b1"],
                "nodes": [_node(f"b-r{r:02d}-n{n}", n) for n in (1, 2, 3, 4)],
            }
            for r in range(1, liquid_racks + 1)
        ],
    }
    plant = [
        {
            "name": "chiller-1", "kind": "chiller", "hall": None, "supply_loop": "chw-1", "return_loop": "cw-1",
            "capacity_kw": 1500.0,
            "setpoints": [
                _setpoint(CHILLED_WATER, "celsius", 10.0, 7, 20, 0.5, 0.1, 300)
            ],
        },
        {
            "name": "tower-1", "kind": "cooling_tower", "hall": None, "supply_loop": "cw-1", "return_loop": None,
            "capacity_kw": 2000.0,
            "setpoints": [_setpoint(TOWER_LEAVING_WATER, "celsius", 24.0, 12, 32, 1.0, 0.5, 300)],
        },
        {
            "name": "tower-2", "kind": "cooling_tower", "hall": None, "supply_loop": "fws-1", "return_loop": None,
            "capacity_kw": 1200.0,
            "setpoints": [_setpoint(TOWER_LEAVING_WATER, "celsius", 22.0, 12, 42, 1.0, 0.5, 300)],
        },
        *(
            {"name": name, "kind": "pump", "hall": None, "supply_loop": loop, "return_loop": None,
             "capacity_kw": None, "setpoints": []}
            for name, loop in (("chw-pump-1", "chw-1"), ("cw-pump-1", "cw-1"), ("fws-pump-1", "fws-1"))
        ),
    ]
    return {
        "format": FORMAT,
        "site": {
            "slug": "demo", "name": "FuseDC Demo Site", "climate": "mixed",
            "description": "Two halls, air (CRAHs + chiller) and direct liquid (CDUs + cooling tower).",
        },
        "cooling_loops": [
            {"name": "chw-1", "kind": "chilled_water"},
            {"name": "cw-1", "kind": "condenser_water"},
            {"name": "fws-1", "kind": "facility_water"},
            {"name": "tcs-b1", "kind": "technology_cooling"},
            {"name": "tcs-b2", "kind": "technology_cooling"},
        ],
        "cooling_units": [
            *plant,
            *(_crah(f"crah-a{i}", "hall-a", 18.0) for i in (1, 2, 3, 4)),
            _crah("crah-b1", "hall-b", 20.0),
            _cdu("cdu-b1", "tcs-b1"),
            _cdu("cdu-b2", "tcs-b2"),
            _server_fans("fans-a", "hall-a"),
        ],
        "halls": [air_hall, liquid_hall],
    }
