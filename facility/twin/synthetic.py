"""Facility-file dicts for tests and benchmarks, shaped like the demo site (no Django needed).

Site plant: chiller-1 on chw-1 with tower-1 (condenser cw-1, water-side economiser), tower-2 on fws-1
for the CDUs, three loop pumps; an air hall (contained, 4 CRAHs) and a liquid hall (CDUs + a CRAH for
the residual air heat). 8-GPU HGX H100 nodes.
"""

from __future__ import annotations

from .state import CDU_PUMP_SPEED, CDU_SECONDARY_SUPPLY, CHILLED_WATER, CRAH_SUPPLY_AIR, TOWER_LEAVING_WATER


def _sp(name, unit, value, lo, hi):
    return {"name": name, "unit": unit, "value": value, "allowable_min": lo, "allowable_max": hi,
            "max_step": 1.0, "max_rate_per_minute": 0.5, "min_dwell_seconds": 300}


def _node(hostname: str, slot: int, gpus: int = 8) -> dict:
    return {"hostname": hostname, "slot": slot, "model": "HGX H100 8-GPU",
            "gpus": [{"index": i, "uuid": f"GPU-{hostname}-{i}", "model": "NVIDIA H100 80GB HBM3",
                      "pci_bus_id": f"00000000:{i:02X}:00.0"} for i in range(gpus)]}


def _racks(nodes: int, per_rack: int) -> list[int]:
    """Node counts per rack: full racks, then the remainder."""
    return [per_rack] * (nodes // per_rack) + ([nodes % per_rack] if nodes % per_rack else [])


def synthetic_facility(air_racks: int = 8, air_nodes_per_rack: int = 2, liquid_racks: int = 4,
                       liquid_nodes_per_rack: int = 4, crahs: int = 4, cdus: int = 2,
                       climate: str = "mixed", contained: bool = True,
                       air_nodes: int | None = None, liquid_nodes: int | None = None) -> dict:
    """The demo-shaped facility; scale it with the rack counts (units scale with `crahs` and `cdus`).
    `air_nodes` / `liquid_nodes`, when given, set the node totals instead (the last rack may be partial)."""
    air = _racks(air_racks * air_nodes_per_rack if air_nodes is None else air_nodes, air_nodes_per_rack)
    liquid = _racks(liquid_racks * liquid_nodes_per_rack if liquid_nodes is None else liquid_nodes,
                    liquid_nodes_per_rack)
    air_kw = sum(air) * 8.5
    liquid_kw = sum(liquid) * 7.5
    crah_names = [f"crah-a{i + 1}" for i in range(crahs)]
    cdu_names = [f"cdu-b{i + 1}" for i in range(cdus)]
    units = [
        {"name": "chiller-1", "kind": "chiller", "hall": None, "supply_loop": "chw-1", "return_loop": "cw-1",
         "capacity_kw": max(1500.0, 1.5 * (air_kw + 0.3 * liquid_kw)),
         "setpoints": [_sp(CHILLED_WATER, "celsius", 10.0, 7, 20)]},
        {"name": "tower-1", "kind": "cooling_tower", "hall": None, "supply_loop": "cw-1", "return_loop": None,
         "capacity_kw": max(2000.0, 2.0 * (air_kw + 0.3 * liquid_kw)),
         "setpoints": [_sp(TOWER_LEAVING_WATER, "celsius", 24.0, 12, 32)]},
        {"name": "tower-2", "kind": "cooling_tower", "hall": None, "supply_loop": "fws-1", "return_loop": None,
         "capacity_kw": max(1200.0, 1.5 * liquid_kw),
         "setpoints": [_sp(TOWER_LEAVING_WATER, "celsius", 22.0, 12, 42)]},
        *({"name": n, "kind": "pump", "hall": None, "supply_loop": lp, "return_loop": None, "capacity_kw": None,
           "setpoints": []} for n, lp in (("chw-pump-1", "chw-1"), ("cw-pump-1", "cw-1"), ("fws-pump-1", "fws-1"))),
        *({"name": n, "kind": "crah", "hall": "hall-a", "supply_loop": None, "return_loop": "chw-1",
           "capacity_kw": max(60.0, 1.5 * air_kw / crahs),
           "setpoints": [_sp(CRAH_SUPPLY_AIR, "celsius", 18.0, 16, 27)]} for n in crah_names),
        {"name": "crah-b1", "kind": "crah", "hall": "hall-b", "supply_loop": None, "return_loop": "chw-1",
         "capacity_kw": max(60.0, 0.5 * liquid_kw),
         "setpoints": [_sp(CRAH_SUPPLY_AIR, "celsius", 20.0, 16, 27)]},
        *({"name": n, "kind": "cdu", "hall": "hall-b", "supply_loop": f"tcs-b{i + 1}", "return_loop": "fws-1",
           "capacity_kw": max(150.0, 1.5 * liquid_kw / cdus),
           "setpoints": [_sp(CDU_SECONDARY_SUPPLY, "celsius", 25.0, 20, 45),
                         _sp(CDU_PUMP_SPEED, "ratio", 1.0, 0.3, 1.2)]} for i, n in enumerate(cdu_names)),
    ]
    # Both halls always exist (their units refer to them), possibly without racks.
    halls = [
        {"name": "hall-a", "cooling_type": "air", "contained": contained, "racks": [
            {"name": f"a-r{r:03d}", "row": 1 + r // 10, "position": 1 + r % 10, "cooled_by": crah_names,
             "nodes": [_node(f"a-r{r:03d}-n{n + 1}", n + 1) for n in range(k)]}
            for r, k in enumerate(air)]},
        {"name": "hall-b", "cooling_type": "liquid", "contained": True, "racks": [
            {"name": f"b-r{r:03d}", "row": 1, "position": r + 1,
             "cooled_by": [cdu_names[r * cdus // len(liquid)], "crah-b1"],
             "nodes": [_node(f"b-r{r:03d}-n{n + 1}", n + 1) for n in range(k)]}
            for r, k in enumerate(liquid)]},
    ]
    return {
        "format": "fusedc-facility/1",
        "site": {"slug": "synthetic", "name": "Synthetic demo-shaped site", "climate": climate},
        "cooling_loops": [{"name": n, "kind": k} for n, k in (
            ("chw-1", "chilled_water"), ("cw-1", "condenser_water"), ("fws-1", "facility_water"),
            *((f"tcs-b{i + 1}", "technology_cooling") for i in range(cdus)))],
        "cooling_units": units,
        "halls": halls,
    }
