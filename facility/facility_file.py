"""The facility file: a whole site as YAML (`manage.py facility import|export`).

One format for people, the importer, the exporter and the twin (which builds its layout from the same
dict). Validation is pydantic plus cross-reference checks; every error names its path and field, e.g.
`halls[1].racks[0].nodes[2].gpus[7].uuid`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import yaml
from django.db import transaction
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from facility.choices import Climate, CoolingLoopKind, CoolingType, CoolingUnitKind, SetpointUnit
from facility.models import GPU, CoolingLoop, CoolingUnit, Hall, Node, Rack, Setpoint, Site
from facility.twin.state import SERVER_FANS, server_fan_range_problem

FORMAT = "fusedc-facility/1"


def _choice(choices):
    return Literal[tuple(choices.values)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class SetpointIn(_Strict):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")
    unit: _choice(SetpointUnit)
    value: float = Field(allow_inf_nan=False)
    allowable_min: float = Field(allow_inf_nan=False)
    allowable_max: float = Field(allow_inf_nan=False)
    max_step: float = Field(gt=0, allow_inf_nan=False)
    max_rate_per_minute: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    min_dwell_seconds: int = Field(default=300, ge=0)

    @model_validator(mode="after")
    def _envelope(self):
        if self.allowable_min > self.allowable_max:
            raise ValueError("allowable_min must not exceed allowable_max")
        if not self.allowable_min <= self.value <= self.allowable_max:
            raise ValueError(f"value {self.value} lies outside [{self.allowable_min}, {self.allowable_max}]")
        return self


class CoolingLoopIn(_Strict):
    name: str = Field(min_length=1, max_length=64)
    kind: _choice(CoolingLoopKind)


class CoolingUnitIn(_Strict):
    name: str = Field(min_length=1, max_length=64)
    kind: _choice(CoolingUnitKind)
    hall: str | None = None
    supply_loop: str | None = None
    return_loop: str | None = None
    capacity_kw: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    setpoints: list[SetpointIn] = []


class GpuIn(_Strict):
    index: int = Field(ge=0, le=63)
    uuid: str = Field(min_length=1, max_length=64)
    model: str = Field(default="NVIDIA H100 80GB HBM3", max_length=64)
    pci_bus_id: str = Field(default="", max_length=32)


class NodeIn(_Strict):
    hostname: str = Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9][A-Za-z0-9.\-_]*$")
    slot: int = Field(default=1, ge=1, le=100)
    model: str = Field(default="HGX H100 8-GPU", max_length=64)
    gpus: list[GpuIn] = []


class RackIn(_Strict):
    name: str = Field(min_length=1, max_length=64)
    row: int = Field(default=1, ge=1)
    position: int = Field(default=1, ge=1)
    cooled_by: list[str] = []
    nodes: list[NodeIn] = []


class HallIn(_Strict):
    name: str = Field(min_length=1, max_length=64)
    cooling_type: _choice(CoolingType)
    contained: bool = True
    racks: list[RackIn] = []


class SiteIn(_Strict):
    slug: str = Field(min_length=1, max_length=50, pattern=r"^[-a-zA-Z0-9_]+$")
    name: str = Field(min_length=1, max_length=100)
    climate: _choice(Climate) = Climate.MIXED.value
    description: str = ""


class FacilityFile(_Strict):
    format: Literal["fusedc-facility/1"]
    site: SiteIn
    cooling_loops: list[CoolingLoopIn] = []
    cooling_units: list[CoolingUnitIn] = []
    halls: list[HallIn] = []


class FacilityFileError(Exception):
    """Raised with every problem found in a facility file; nothing has been written when it is raised."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("\n".join(errors))


def _path(loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(file)"


def _duplicates(items, key, where: str, what: str, errors: list[str]):
    seen: dict = {}
    for i, item in enumerate(items):
        value = key(item)
        if value in seen:
            errors.append(f"{where}[{i}].{what}: duplicate {value!r} (first at {where}[{seen[value]}])")
        else:
            seen[value] = i


def _cross_check(doc: FacilityFile) -> list[str]:
    """References between parts of the file, and uniqueness the database would otherwise reject."""
    errors: list[str] = []
    loops = {loop.name for loop in doc.cooling_loops}
    halls = {hall.name for hall in doc.halls}
    units = {unit.name for unit in doc.cooling_units}
    _duplicates(doc.cooling_loops, lambda x: x.name, "cooling_loops", "name", errors)
    _duplicates(doc.cooling_units, lambda x: x.name, "cooling_units", "name", errors)
    _duplicates(doc.halls, lambda x: x.name, "halls", "name", errors)
    fans_of_hall: dict[str, str] = {}
    for u, unit in enumerate(doc.cooling_units):
        where = f"cooling_units[{u}]"
        if unit.hall is not None and unit.hall not in halls:
            errors.append(f"{where}.hall: no hall named {unit.hall!r}")
        for attr in ("supply_loop", "return_loop"):
            name = getattr(unit, attr)
            if name is not None and name not in loops:
                errors.append(f"{where}.{attr}: no cooling loop named {name!r}")
        _duplicates(unit.setpoints, lambda x: x.name, f"{where}.setpoints", "name", errors)
        for i, sp in enumerate(unit.setpoints):
            if problem := server_fan_range_problem(unit.kind, sp.name, sp.unit, sp.allowable_min, sp.allowable_max):
                errors.append(f"{where}.setpoints[{i}]: {problem}")
        if unit.kind == SERVER_FANS:  # a hall's nodes' fans: one fan duty per hall
            if unit.hall is None:
                errors.append(f"{where}.hall: server fans belong to a hall")
            elif unit.hall in fans_of_hall:
                errors.append(f"{where}: hall {unit.hall!r} already has server fans ({fans_of_hall[unit.hall]!r})")
            else:
                fans_of_hall[unit.hall] = unit.name
    hostnames: dict[str, str] = {}
    uuids: dict[str, str] = {}
    for h, hall in enumerate(doc.halls):
        _duplicates(hall.racks, lambda x: x.name, f"halls[{h}].racks", "name", errors)
        for r, rack in enumerate(hall.racks):
            rwhere = f"halls[{h}].racks[{r}]"
            for c, unit_name in enumerate(rack.cooled_by):
                if unit_name not in units:
                    errors.append(f"{rwhere}.cooled_by[{c}]: no cooling unit named {unit_name!r}")
            for n, node in enumerate(rack.nodes):
                nwhere = f"{rwhere}.nodes[{n}]"
                if node.hostname in hostnames:
                    first = hostnames[node.hostname]
                    errors.append(f"{nwhere}.hostname: duplicate {node.hostname!r} (first at {first})")
                hostnames.setdefault(node.hostname, nwhere)
                _duplicates(node.gpus, lambda x: x.index, f"{nwhere}.gpus", "index", errors)
                for g, gpu in enumerate(node.gpus):
                    gwhere = f"{nwhere}.gpus[{g}].uuid"
                    if gpu.uuid in uuids:
                        errors.append(f"{gwhere}: duplicate {gpu.uuid!r} (first at {uuids[gpu.uuid]})")
                    uuids.setdefault(gpu.uuid, gwhere)
    return errors


def parse(text: str) -> FacilityFile:
    """Parse and validate a facility file; raises FacilityFileError listing every problem with its path."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        raise FacilityFileError([f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}"]) from None
    if not isinstance(data, dict):
        raise FacilityFileError(["(file): expected a mapping with format, site, cooling_loops, cooling_units, halls"])
    try:
        doc = FacilityFile.model_validate(data)
    except ValidationError as exc:
        raise FacilityFileError([f"{_path(err['loc'])}: {err['msg']}" for err in exc.errors()]) from None
    errors = _cross_check(doc)
    if errors:
        raise FacilityFileError(errors)
    return doc


@dataclass
class ImportReport:
    """Counts of what an import did, per model: created, updated, unchanged."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    not_in_file: dict[str, list[str]] = field(default_factory=dict)

    def note(self, model: str, outcome: str):
        self.counts.setdefault(model, {"created": 0, "updated": 0, "unchanged": 0})[outcome] += 1

    @property
    def changed(self) -> bool:
        return any(c["created"] or c["updated"] for c in self.counts.values())

    def lines(self) -> list[str]:
        out = [
            f"{model:<14} created {c['created']:>5}  updated {c['updated']:>5}  unchanged {c['unchanged']:>5}"
            for model, c in self.counts.items()
        ]
        for model, names in self.not_in_file.items():
            out.append(f"{model}: {len(names)} in the database but not in the file (kept): {', '.join(names[:10])}")
        return out


def _upsert(report: ImportReport, model, lookup: dict, values: dict, m2m: dict | None = None):
    """Create or update one row; touch it only when a field differs, so re-imports change nothing.

    `m2m` maps a many-to-many field to the set of primary keys it should hold.
    """
    m2m = m2m or {}
    obj = model.objects.filter(**lookup).first()
    if obj is None:
        obj = model.objects.create(**lookup, **values)
        for name, pks in m2m.items():
            getattr(obj, name).set(pks)
        report.note(model.__name__, "created")
        return obj
    changed = [name for name, value in values.items() if getattr(obj, name) != value]
    changed_m2m = [name for name, pks in m2m.items() if set(getattr(obj, name).values_list("pk", flat=True)) != pks]
    for name in changed:
        setattr(obj, name, values[name])
    for name in changed_m2m:
        getattr(obj, name).set(m2m[name])
    if changed or changed_m2m:
        obj.save(update_fields=[*changed, "updated_at"])
        report.note(model.__name__, "updated")
    else:
        report.note(model.__name__, "unchanged")
    return obj


@transaction.atomic
def import_facility(doc: FacilityFile) -> ImportReport:
    """Write a validated facility file to the database, all or nothing.

    Objects are matched by natural key (site slug, names, hostname, GPU UUID). A setpoint's `value` is
    written only when the setpoint is created: afterwards it is the plant's read-back, changed only by
    approved setpoint changes. Objects in the database but absent from the file are reported, not deleted.
    """
    _check_against_database(doc)
    report = ImportReport()
    site = _upsert(
        report, Site, {"slug": doc.site.slug},
        {"name": doc.site.name, "climate": doc.site.climate, "description": doc.site.description},
    )
    halls = {
        h.name: _upsert(report, Hall, {"site": site, "name": h.name},
                        {"cooling_type": h.cooling_type, "contained": h.contained})
        for h in doc.halls
    }
    loops = {
        lp.name: _upsert(report, CoolingLoop, {"site": site, "name": lp.name}, {"kind": lp.kind})
        for lp in doc.cooling_loops
    }
    units = {}
    for u in doc.cooling_units:
        unit = _upsert(
            report, CoolingUnit, {"site": site, "name": u.name},
            {
                "kind": u.kind,
                "hall": halls.get(u.hall),
                "supply_loop": loops.get(u.supply_loop),
                "return_loop": loops.get(u.return_loop),
                "capacity_kw": u.capacity_kw,
            },
        )
        units[u.name] = unit
        for sp in u.setpoints:
            envelope = sp.model_dump(exclude={"name", "value"})
            existing = Setpoint.objects.filter(cooling_unit=unit, name=sp.name).exists()
            _upsert(report, Setpoint, {"cooling_unit": unit, "name": sp.name},
                    envelope if existing else {**envelope, "value": sp.value})
    for h in doc.halls:
        for r in h.racks:
            rack = _upsert(report, Rack, {"hall": halls[h.name], "name": r.name},
                           {"row": r.row, "position": r.position},
                           m2m={"cooled_by": {units[name].pk for name in r.cooled_by}})
            for n in r.nodes:
                node = _upsert(report, Node, {"hostname": n.hostname},
                               {"rack": rack, "slot": n.slot, "model": n.model})
                for g in n.gpus:
                    _upsert(report, GPU, {"uuid": g.uuid},
                            {"node": node, "index": g.index, "model": g.model, "pci_bus_id": g.pci_bus_id})
    _report_extras(report, site, doc)
    return report


def _check_against_database(doc: FacilityFile):
    """Conflicts only the database can reveal, reported like file errors (nothing is written)."""
    errors = []
    in_file = {g.uuid for h in doc.halls for r in h.racks for n in r.nodes for g in n.gpus}
    for h, hall in enumerate(doc.halls):
        for r, rack in enumerate(hall.racks):
            for n, node in enumerate(rack.nodes):
                held = dict(GPU.objects.filter(node__hostname=node.hostname).values_list("index", "uuid"))
                for g, gpu in enumerate(node.gpus):
                    other = held.get(gpu.index)
                    if other and other != gpu.uuid and other not in in_file:
                        errors.append(
                            f"halls[{h}].racks[{r}].nodes[{n}].gpus[{g}].uuid: index {gpu.index} of "
                            f"{node.hostname} is held by {other} in the database; delete that GPU first "
                            "(a swapped GPU keeps its history under its own UUID)"
                        )
    in_file_units = {u.name for u in doc.cooling_units}
    for u, unit in enumerate(doc.cooling_units):
        if unit.kind != SERVER_FANS or unit.hall is None:
            continue
        held = (CoolingUnit.objects.filter(site__slug=doc.site.slug, hall__name=unit.hall, kind=SERVER_FANS)
                .exclude(name__in=in_file_units).values_list("name", flat=True).first())
        if held:
            errors.append(f"cooling_units[{u}]: hall {unit.hall!r} has server fans {held!r} in the database; a hall "
                          "has one fan duty: rename that unit in the file, or delete it first")
    if errors:
        raise FacilityFileError(errors)


def _report_extras(report: ImportReport, site: Site, doc: FacilityFile):
    in_file_hosts = {n.hostname for h in doc.halls for r in h.racks for n in r.nodes}
    in_file_units = {u.name for u in doc.cooling_units}
    extra_nodes = Node.objects.filter(rack__hall__site=site).exclude(hostname__in=in_file_hosts)
    extra_units = site.cooling_units.exclude(name__in=in_file_units)
    if extra_nodes:
        report.not_in_file["Node"] = [n.hostname for n in extra_nodes]
    if extra_units:
        report.not_in_file["CoolingUnit"] = [u.name for u in extra_units]


def export_facility(site: Site) -> dict:
    """The site as a facility-file dict (what `parse` accepts and the twin builds its layout from)."""
    units = site.cooling_units.select_related("hall", "supply_loop", "return_loop").prefetch_related("setpoints")
    halls = site.halls.prefetch_related("racks__cooled_by", "racks__nodes__gpus")
    return {
        "format": FORMAT,
        "site": {"slug": site.slug, "name": site.name, "climate": site.climate, "description": site.description},
        "cooling_loops": [{"name": lp.name, "kind": lp.kind} for lp in site.cooling_loops.all()],
        "cooling_units": [
            {
                "name": u.name,
                "kind": u.kind,
                "hall": u.hall.name if u.hall else None,
                "supply_loop": u.supply_loop.name if u.supply_loop else None,
                "return_loop": u.return_loop.name if u.return_loop else None,
                "capacity_kw": u.capacity_kw,
                "setpoints": [
                    {
                        "name": sp.name, "unit": sp.unit, "value": sp.value,
                        "allowable_min": sp.allowable_min, "allowable_max": sp.allowable_max,
                        "max_step": sp.max_step, "max_rate_per_minute": sp.max_rate_per_minute,
                        "min_dwell_seconds": sp.min_dwell_seconds,
                    }
                    for sp in u.setpoints.all()
                ],
            }
            for u in units
        ],
        "halls": [
            {
                "name": h.name,
                "cooling_type": h.cooling_type,
                "contained": h.contained,
                "racks": [
                    {
                        "name": r.name, "row": r.row, "position": r.position,
                        "cooled_by": sorted(u.name for u in r.cooled_by.all()),
                        "nodes": [
                            {
                                "hostname": n.hostname, "slot": n.slot, "model": n.model,
                                "gpus": [
                                    {"index": g.index, "uuid": g.uuid, "model": g.model, "pci_bus_id": g.pci_bus_id}
                                    for g in n.gpus.all()
                                ],
                            }
                            for n in r.nodes.all()
                        ],
                    }
                    for r in h.racks.all()
                ],
            }
            for h in halls
        ],
    }


def dump(data: dict) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=120)
