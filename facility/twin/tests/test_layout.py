"""Reading the facility-file dict (format fusedc-facility/1)."""

import copy
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from facility.twin import LayoutError, Scenario, Twin, layout_from_facility, synthetic_facility

DEMO_YAML = Path(__file__).resolve().parents[2] / "demo_facility.yaml"


def test_reads_the_demo_shape(small_site):
    lay = layout_from_facility(small_site)
    assert lay.climate == "mixed"
    assert [h.name for h in lay.halls] == ["hall-a", "hall-b"]
    assert lay.gpu_count == 64
    assert lay.unit("cdu-b1").setpoints["pump_speed_setpoint"].allowable_max == 1.2
    node = lay.halls[0].racks[0].nodes[0]
    assert [g.index for g in node.gpus] == list(range(8))


@pytest.mark.skipif(not DEMO_YAML.exists(), reason="the lead's demo facility file is not there yet")
def test_reads_the_shipped_demo_file():
    data = yaml.safe_load(DEMO_YAML.read_text())
    twin = Twin(data, "seed", Scenario(workload="training"))
    assert len(twin.gpu_uuids) == twin.layout.gpu_count > 0
    twin.step(60)
    assert 1.05 <= twin.facility()["pue"] <= 1.6


def _broken(site, path, value):
    data = copy.deepcopy(site)
    obj = data
    for key in path[:-1]:
        obj = obj[key]
    if value is KeyError:
        del obj[path[-1]]
    else:
        obj[path[-1]] = value
    return data


@pytest.mark.parametrize(("path", "value", "message"), [
    (("format",), "fusedc-facility/2", "format: expected"),
    (("site", "climate"), "arctic", "site.climate: 'arctic' is not one of"),
    (("halls", 0, "racks", 1, "nodes", 0, "gpus", 3, "uuid"), KeyError,
     r"halls\[0\]\.racks\[1\]\.nodes\[0\]\.gpus\[3\]\.uuid: required"),
    (("halls", 0, "racks", 0, "nodes", 1, "gpus", 2, "index"), "two", r"gpus\[2\]\.index: expected int"),
    (("halls", 1, "cooling_type"), "immersion", r"halls\[1\]\.cooling_type"),
    (("halls", 0, "racks", 0, "cooled_by", 1), "crah-z9", r"halls\[0\]\.racks\[0\]\.cooled_by\[1\]: unknown"),
    (("cooling_units", 0, "kind"), "heat_pump", r"cooling_units\[0\]\.kind"),
    (("cooling_units", 0, "supply_loop"), "chw-9", r"cooling_units\[0\]\.supply_loop: unknown cooling loop"),
    (("cooling_units", 0, "setpoints", 0, "value"), 99.0, r"cooling_units\[0\]\.setpoints\[0\]\.value"),
    (("cooling_units", 0, "capacity_kw"), "big", r"cooling_units\[0\]\.capacity_kw: expected float"),
    (("halls", 0, "contained"), "yes", r"halls\[0\]\.contained: expected bool"),
])
def test_errors_name_the_field(small_site, path, value, message):
    with pytest.raises(LayoutError, match=message):
        layout_from_facility(_broken(small_site, path, value))


def test_duplicates_are_errors(small_site):
    data = copy.deepcopy(small_site)
    data["halls"][1]["racks"][0]["nodes"][0]["gpus"][0]["uuid"] = data["halls"][0]["racks"][0]["nodes"][0]["gpus"][0][
        "uuid"]
    with pytest.raises(LayoutError, match="duplicate GPU uuid"):
        layout_from_facility(data)
    data = copy.deepcopy(small_site)
    data["cooling_units"][1]["name"] = data["cooling_units"][0]["name"]
    with pytest.raises(LayoutError, match=r"cooling_units\[1\]: duplicate cooling unit"):
        layout_from_facility(data)


def test_hall_missing_a_unit_kind_it_needs(small_site):
    no_crah = copy.deepcopy(small_site)
    no_crah["cooling_units"] = [u for u in no_crah["cooling_units"] if not u["name"].startswith("crah-a")]
    for rack in no_crah["halls"][0]["racks"]:
        rack["cooled_by"] = []
    with pytest.raises(ValueError, match=r"hall 'hall-a'.*needs a CRAH or CRAC"):
        Twin(no_crah)
    no_cdu = copy.deepcopy(small_site)
    no_cdu["cooling_units"] = [u for u in no_cdu["cooling_units"] if u["kind"] != "cdu"]
    for rack in no_cdu["halls"][1]["racks"]:
        rack["cooled_by"] = ["crah-b1"]
    with pytest.raises(ValueError, match=r"hall 'hall-b'.*needs a CDU"):
        Twin(no_cdu)
    no_chiller = copy.deepcopy(small_site)
    no_chiller["cooling_units"] = [u for u in no_chiller["cooling_units"] if u["kind"] != "chiller"]
    with pytest.raises(ValueError, match="needs chilled water but the site has no chiller"):
        Twin(no_chiller)


def test_other_shapes_run():
    # A CRAC-only air hall (DX, no chiller), a dry cooler for the CDUs, no pumps, no setpoints, no capacities.
    data = {
        "format": "fusedc-facility/1",
        "site": {"slug": "odd", "name": "Odd", "climate": "hot"},
        "cooling_loops": [{"name": "fw", "kind": "facility_water"}],
        "cooling_units": [
            {"name": "crac-1", "kind": "crac", "hall": "h1"},
            {"name": "crac-2", "kind": "crac", "hall": "h2"},
            {"name": "dc-1", "kind": "dry_cooler", "supply_loop": "fw"},
            {"name": "cdu-1", "kind": "cdu", "hall": "h2", "return_loop": "fw"},
        ],
        "halls": [
            {"name": "h1", "cooling_type": "air", "contained": False, "racks": [
                {"name": "r1", "nodes": [{"hostname": "n1", "gpus": [
                    {"index": i, "uuid": f"g1-{i}"} for i in range(4)]}, {"hostname": "cpu-only", "gpus": []}]}]},
            {"name": "h2", "cooling_type": "liquid", "racks": [
                {"name": "r2", "nodes": [{"hostname": "n2", "gpus": [
                    {"index": i, "uuid": f"g2-{i}"} for i in range(8)]}]}]},
        ],
    }
    twin = Twin(data, "physics", Scenario(workload={"h1": "burn", "h2": "inference"}, start=datetime(2025, 7, 15, 15)))
    twin.step(600)
    f = twin.facility()
    assert len(twin.gpu_uuids) == 12
    assert 1.05 < f["pue"] < 2.0
    assert f["outdoor_dry_bulb_celsius"] > 30  # Phoenix, July afternoon
    units = twin.units()
    assert units["crac-1"]["power_kw"] > 0 and units["dc-1"]["heat_removed_kw"] > 0
    assert twin.read_setpoint("cdu-1", "secondary_supply_temperature_setpoint") == 25.0  # implicit default
    # The dry cooler cannot make water colder than dry-bulb + approach: the secondary loop runs warmer.
    assert units["cdu-1"]["secondary_supply_temperature_celsius"] > 25.0


def test_synthetic_sizes():
    assert layout_from_facility(synthetic_facility(air_nodes=63, liquid_nodes=62)).gpu_count == 1000


def test_server_fans_belong_to_one_hall_each(small_site):
    fans = {"name": "fans-a", "kind": "server_fans", "hall": "hall-a", "setpoints": []}
    ok = {**small_site, "cooling_units": [*small_site["cooling_units"], fans]}
    assert layout_from_facility(ok).unit("fans-a").kind == "server_fans"
    site_level = {**small_site, "cooling_units": [*small_site["cooling_units"], {**fans, "hall": None}]}
    with pytest.raises(LayoutError, match=r"cooling_units\[\d+\].hall: a server_fans unit belongs to a hall"):
        layout_from_facility(site_level)
    twice = {**small_site, "cooling_units": [*small_site["cooling_units"], fans, {**fans, "name": "fans-a2"}]}
    with pytest.raises(LayoutError, match="hall 'hall-a' already has 'fans-a'; one server_fans unit per hall"):
        layout_from_facility(twice)


def test_server_fans_can_never_be_stopped(small_site):
    fans = {"name": "fans-a", "kind": "server_fans", "hall": "hall-a", "setpoints": [
        {"name": "fan_speed_setpoint", "unit": "ratio", "value": 0.5, "allowable_min": 0.0, "allowable_max": 1.0}]}
    site = {**small_site, "cooling_units": [*small_site["cooling_units"], fans]}
    with pytest.raises(LayoutError, match=r"setpoints\[0\]: server fan duty must stay within \[0.2, 1\]"):
        layout_from_facility(site)
