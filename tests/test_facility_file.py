"""Facility YAML import/export: validation paths, all-or-nothing, idempotence, the demo file."""

import pytest
import yaml
from django.core.management import CommandError, call_command

from facility import facility_file
from facility.demo import build_demo_facility
from facility.management.commands.seed_demo import DEMO_FILE
from facility.models import GPU, CoolingUnit, Hall, Node, Rack, Setpoint, Site

pytestmark = pytest.mark.django_db


def _text(data: dict) -> str:
    return facility_file.dump(data)


def _errors(data) -> list[str]:
    with pytest.raises(facility_file.FacilityFileError) as exc:
        facility_file.parse(data if isinstance(data, str) else _text(data))
    return exc.value.errors


def _counts():
    return {m.__name__: m.objects.count() for m in (Site, Hall, CoolingUnit, Rack, Node, GPU, Setpoint)}


def test_demo_file_is_the_generator_output():
    assert yaml.safe_load(DEMO_FILE.read_text()) == build_demo_facility()


def test_demo_facility_shape():
    facility_file.import_facility(facility_file.parse(DEMO_FILE.read_text()))
    assert {h.name: h.cooling_type for h in Hall.objects.all()} == {"hall-a": "air", "hall-b": "liquid"}
    assert Node.objects.count() >= 32
    assert GPU.objects.count() == Node.objects.count() * 8
    kinds = set(CoolingUnit.objects.values_list("kind", flat=True))
    assert {"crah", "chiller", "cdu", "cooling_tower"} <= kinds
    assert all(sp.allowable_min <= sp.value <= sp.allowable_max for sp in Setpoint.objects.all())
    liquid_rack = Rack.objects.get(name="b-r01")
    assert set(liquid_rack.cooled_by.values_list("kind", flat=True)) == {"cdu", "crah"}


def test_reimport_changes_nothing():
    doc = facility_file.parse(DEMO_FILE.read_text())
    facility_file.import_facility(doc)
    stamps = list(GPU.objects.order_by("pk").values_list("updated_at", flat=True))
    report = facility_file.import_facility(doc)
    assert not report.changed
    assert report.counts["GPU"] == {"created": 0, "updated": 0, "unchanged": 256}
    assert list(GPU.objects.order_by("pk").values_list("updated_at", flat=True)) == stamps


def test_export_round_trips():
    def normalised(data):
        doc = facility_file.parse(_text(data)).model_dump()
        doc["cooling_units"].sort(key=lambda u: u["name"])
        for unit in doc["cooling_units"]:
            unit["setpoints"].sort(key=lambda sp: sp["name"])
        return doc

    data = build_demo_facility()
    facility_file.import_facility(facility_file.parse(_text(data)))
    exported = facility_file.export_facility(Site.objects.get(slug="demo"))
    assert normalised(exported) == normalised(data)
    assert not facility_file.import_facility(facility_file.parse(_text(exported))).changed


def test_update_is_reported_and_applied():
    data = build_demo_facility()
    facility_file.import_facility(facility_file.parse(_text(data)))
    data["halls"][0]["racks"][0]["cooled_by"] = ["crah-a1"]
    data["cooling_units"][0]["setpoints"][0]["max_step"] = 0.25
    report = facility_file.import_facility(facility_file.parse(_text(data)))
    assert report.counts["Rack"]["updated"] == 1
    assert report.counts["Setpoint"]["updated"] == 1
    assert list(Rack.objects.get(name="a-r01").cooled_by.values_list("name", flat=True)) == ["crah-a1"]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d.pop("format"), "format: Field required"),
        (lambda d: d["halls"][1].update(cooling_type="immersion"), "halls[1].cooling_type: Input should be"),
        (lambda d: d["halls"][0]["racks"][2]["nodes"][1]["gpus"][3].update(index=-1),
         "halls[0].racks[2].nodes[1].gpus[3].index: Input should be greater than or equal to 0"),
        (lambda d: d["halls"][0]["racks"][0]["nodes"][0]["gpus"][1].update(
            uuid=d["halls"][0]["racks"][0]["nodes"][0]["gpus"][0]["uuid"]),
         "halls[0].racks[0].nodes[0].gpus[1].uuid: duplicate"),
        (lambda d: d["halls"][0]["racks"][0]["cooled_by"].append("crah-z9"),
         "halls[0].racks[0].cooled_by[4]: no cooling unit named 'crah-z9'"),
        (lambda d: d["cooling_units"][0]["setpoints"][0].update(value=99),
         "cooling_units[0].setpoints[0]: Value error, value 99.0 lies outside [7.0, 20.0]"),
        (lambda d: d["cooling_units"][3].update(supply_loop="nope"), "cooling_units[3].supply_loop: no cooling loop"),
        (lambda d: d["halls"][1]["racks"][0]["nodes"][0].update(colour="red"),
         "halls[1].racks[0].nodes[0].colour: Extra inputs are not permitted"),
        (lambda d: d["halls"][1]["racks"][0]["nodes"][0].update(hostname="a-r01-n1"),
         "halls[1].racks[0].nodes[0].hostname: duplicate 'a-r01-n1'"),
        (lambda d: d["cooling_units"][-1].update(hall=None), "cooling_units[13].hall: server fans belong to a hall"),
        (lambda d: d["cooling_units"].append({**d["cooling_units"][-1], "name": "fans-a2"}),
         "cooling_units[14]: hall 'hall-a' already has server fans ('fans-a')"),
        (lambda d: d["cooling_units"][13]["setpoints"][0].update(unit="percent", allowable_max=1.0),
         "cooling_units[13].setpoints[0]: server fan duty is a ratio (0-1), not percent"),
    ],
)
def test_validation_names_path_and_field(mutate, expected):
    data = build_demo_facility()
    mutate(data)
    errors = _errors(data)
    assert any(e.startswith(expected) for e in errors), errors


def test_every_error_is_reported_at_once():
    data = build_demo_facility()
    data["halls"][0]["cooling_type"] = "steam"
    data["site"]["slug"] = "has spaces"
    assert len(_errors(data)) == 2


def test_yaml_syntax_error_names_line():
    (error,) = _errors("format: fusedc-facility/1\nsite: {slug: x\nhalls: []\n")
    assert error.startswith("line ") and "not valid YAML" in error


def test_import_is_all_or_nothing():
    data = build_demo_facility()
    facility_file.import_facility(facility_file.parse(_text(data)))
    before = _counts()
    # A valid file whose last GPU collides with one in the database: fails after earlier rows were written.
    data["site"]["name"] = "Renamed"
    data["halls"][1]["racks"][-1]["nodes"][-1]["gpus"][-1]["uuid"] = "GPU-new-one"
    with pytest.raises(facility_file.FacilityFileError) as exc:
        facility_file.import_facility(facility_file.parse(_text(data)))
    assert "is held by" in exc.value.errors[0]
    assert _counts() == before
    assert Site.objects.get(slug="demo").name == "FuseDC Demo Site"


def test_import_command_reports_errors_and_writes_nothing(tmp_path):
    data = build_demo_facility()
    data["halls"][0]["racks"][0]["nodes"][0]["gpus"][0]["uuid"] = ""
    path = tmp_path / "bad.yaml"
    path.write_text(_text(data))
    with pytest.raises(CommandError, match=r"halls\[0\]\.racks\[0\]\.nodes\[0\]\.gpus\[0\]\.uuid"):
        call_command("facility", "import", str(path))
    assert Site.objects.count() == 0


def test_import_and_export_commands(tmp_path, capsys):
    path = tmp_path / "demo.yaml"
    path.write_text(DEMO_FILE.read_text())
    call_command("facility", "import", str(path))
    call_command("facility", "import", str(path))
    out = capsys.readouterr().out
    assert "already up to date, nothing changed" in out
    call_command("facility", "export", "-o", str(tmp_path / "out.yaml"))
    assert facility_file.parse((tmp_path / "out.yaml").read_text()).site.slug == "demo"


def test_setpoint_value_is_not_overwritten_by_reimport():
    doc = facility_file.parse(DEMO_FILE.read_text())
    facility_file.import_facility(doc)
    sp = Setpoint.objects.get(cooling_unit__name="crah-a1")
    Setpoint.objects.filter(pk=sp.pk).update(value=21.0)  # the plant moved it since
    facility_file.import_facility(doc)
    sp.refresh_from_db()
    assert sp.value == 21.0


def test_seed_demo_creates_role_users_with_fresh_passwords(capsys):
    from django.contrib.auth import authenticate
    from django.test import RequestFactory

    call_command("seed_demo")
    first = capsys.readouterr().out
    call_command("seed_demo")
    second = capsys.readouterr().out
    for role in ("viewer", "operator", "approver", "admin"):
        pw1 = next(line.split()[1] for line in first.splitlines() if line.strip().startswith(role + " "))
        pw2 = next(line.split()[1] for line in second.splitlines() if line.strip().startswith(role + " "))
        assert pw1 != pw2
        user = authenticate(RequestFactory().post("/login/"), username=role, password=pw2)
        assert user is not None and list(user.groups.values_list("name", flat=True)) == [role]
    assert "already loaded" in second


def test_a_hall_keeps_one_server_fans_unit_across_imports():
    data = build_demo_facility()
    facility_file.import_facility(facility_file.parse(_text(data)))
    data["cooling_units"][13]["name"] = "fans-hall-a"  # renamed in the file: the old unit stays in the database
    with pytest.raises(facility_file.FacilityFileError) as err:
        facility_file.import_facility(facility_file.parse(_text(data)))
    assert err.value.errors == ["cooling_units[13]: hall 'hall-a' has server fans 'fans-a' in the database; a hall "
                                "has one fan duty: rename that unit in the file, or delete it first"]
    assert not CoolingUnit.objects.filter(name="fans-hall-a").exists()
