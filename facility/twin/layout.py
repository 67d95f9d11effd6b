"""The twin's view of a facility, read from FuseDC's facility-file dict (format `fusedc-facility/1`).

The importer/exporter produce exactly this dict; the twin reads it without Django. Errors name the path
of the offending field (`halls[1].racks[0].nodes[2].gpus[7].uuid: ...`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .state import SERVER_FANS, server_fan_range_problem

FORMAT = "fusedc-facility/1"
CLIMATES = ("hot", "mixed", "cool")
COOLING_TYPES = ("air", "liquid")
LOOP_KINDS = ("chilled_water", "condenser_water", "facility_water", "technology_cooling")
UNIT_KINDS = ("crah", "crac", "cdu", "chiller", "cooling_tower", "dry_cooler", "pump", SERVER_FANS)


class LayoutError(ValueError):
    """A facility dict the twin cannot build from; the message starts with the field's path."""


@dataclass(frozen=True)
class Setpoint:
    name: str
    unit: str
    value: float
    allowable_min: float
    allowable_max: float
    max_step: float | None = None
    max_rate_per_minute: float | None = None
    min_dwell_seconds: int | None = None


@dataclass(frozen=True)
class Loop:
    name: str
    kind: str


@dataclass(frozen=True)
class Unit:
    name: str
    kind: str
    hall: str | None
    supply_loop: str | None
    return_loop: str | None
    capacity_kw: float | None
    setpoints: dict[str, Setpoint] = field(default_factory=dict)


@dataclass(frozen=True)
class Gpu:
    index: int
    uuid: str
    model: str
    pci_bus_id: str


@dataclass(frozen=True)
class Node:
    hostname: str
    slot: int
    model: str
    gpus: tuple[Gpu, ...]  # sorted by index


@dataclass(frozen=True)
class Rack:
    name: str
    row: int
    position: int
    cooled_by: tuple[str, ...]
    nodes: tuple[Node, ...]


@dataclass(frozen=True)
class Hall:
    name: str
    cooling_type: str
    contained: bool
    racks: tuple[Rack, ...]


@dataclass(frozen=True)
class Layout:
    site_slug: str
    site_name: str
    climate: str
    loops: tuple[Loop, ...]
    units: tuple[Unit, ...]
    halls: tuple[Hall, ...]

    def unit(self, name: str) -> Unit:
        for u in self.units:
            if u.name == name:
                return u
        raise KeyError(name)

    @property
    def gpu_count(self) -> int:
        return sum(len(n.gpus) for h in self.halls for r in h.racks for n in r.nodes)


def _get(d: Mapping, key: str, path: str, kind, required: bool = True, default=None):
    if not isinstance(d, Mapping):
        raise LayoutError(f"{path}: expected a mapping, got {type(d).__name__}")
    if key not in d or d[key] is None:
        if required:
            raise LayoutError(f"{path}.{key}: required")
        return default
    value = d[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if (kind is not None and not isinstance(value, kind)) or (isinstance(value, bool) and kind is not bool):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise LayoutError(f"{path}.{key}: expected {names}, got {value!r}")
    return value


def _choice(d, key, path, choices, required=True, default=None) -> str:
    value = _get(d, key, path, str, required, default)
    if value not in choices:
        raise LayoutError(f"{path}.{key}: {value!r} is not one of {', '.join(choices)}")
    return value


def _list(d, key, path) -> list:
    return _get(d, key, path, list, required=False, default=[])


def _unique(names: list[str], path: str, what: str):
    seen = set()
    for i, name in enumerate(names):
        if name in seen:
            raise LayoutError(f"{path}[{i}]: duplicate {what} {name!r}")
        seen.add(name)


def _setpoint(d, path) -> Setpoint:
    sp = Setpoint(
        name=_get(d, "name", path, str),
        unit=_get(d, "unit", path, str, required=False, default=""),
        value=_get(d, "value", path, float),
        allowable_min=_get(d, "allowable_min", path, float),
        allowable_max=_get(d, "allowable_max", path, float),
        max_step=_get(d, "max_step", path, float, required=False),
        max_rate_per_minute=_get(d, "max_rate_per_minute", path, float, required=False),
        min_dwell_seconds=_get(d, "min_dwell_seconds", path, int, required=False),
    )
    if sp.allowable_min > sp.allowable_max:
        raise LayoutError(f"{path}.allowable_min: exceeds allowable_max")
    if not sp.allowable_min <= sp.value <= sp.allowable_max:
        raise LayoutError(f"{path}.value: {sp.value} lies outside [{sp.allowable_min}, {sp.allowable_max}]")
    return sp


def _unit(d, path, loops: set[str]) -> Unit:
    sps = [_setpoint(s, f"{path}.setpoints[{i}]") for i, s in enumerate(_list(d, "setpoints", path))]
    _unique([s.name for s in sps], f"{path}.setpoints", "setpoint")
    unit = Unit(
        name=_get(d, "name", path, str),
        kind=_choice(d, "kind", path, UNIT_KINDS),
        hall=_get(d, "hall", path, str, required=False),
        supply_loop=_get(d, "supply_loop", path, str, required=False),
        return_loop=_get(d, "return_loop", path, str, required=False),
        capacity_kw=_get(d, "capacity_kw", path, float, required=False),
        setpoints={s.name: s for s in sps},
    )
    for key in ("supply_loop", "return_loop"):
        loop = getattr(unit, key)
        if loop is not None and loop not in loops:
            raise LayoutError(f"{path}.{key}: unknown cooling loop {loop!r}")
    if unit.capacity_kw is not None and unit.capacity_kw <= 0:
        raise LayoutError(f"{path}.capacity_kw: must be positive")
    for i, sp in enumerate(sps):
        if problem := server_fan_range_problem(unit.kind, sp.name, sp.unit, sp.allowable_min, sp.allowable_max):
            raise LayoutError(f"{path}.setpoints[{i}]: {problem}")
    return unit


def _node(d, path) -> Node:
    gpus = []
    for i, g in enumerate(_list(d, "gpus", path)):
        p = f"{path}.gpus[{i}]"
        index = _get(g, "index", p, int)
        if index < 0:
            raise LayoutError(f"{p}.index: must be >= 0")
        gpus.append(
            Gpu(
                index=index,
                uuid=_get(g, "uuid", p, str),
                model=_get(g, "model", p, str, required=False, default="NVIDIA H100 80GB HBM3"),
                pci_bus_id=_get(g, "pci_bus_id", p, str, required=False, default=""),
            )
        )
    _unique([str(g.index) for g in gpus], f"{path}.gpus", "GPU index")
    return Node(
        hostname=_get(d, "hostname", path, str),
        slot=_get(d, "slot", path, int, required=False, default=1),
        model=_get(d, "model", path, str, required=False, default="HGX H100 8-GPU"),
        gpus=tuple(sorted(gpus, key=lambda g: g.index)),
    )


def layout_from_facility(data: Mapping) -> Layout:
    """Build the twin's layout from a facility-file dict; raises LayoutError naming the bad field."""
    fmt = _get(data, "format", "facility", str)
    if fmt != FORMAT:
        raise LayoutError(f"format: expected {FORMAT!r}, got {fmt!r}")
    site = _get(data, "site", "facility", Mapping)
    loops = [
        Loop(_get(d, "name", f"cooling_loops[{i}]", str), _choice(d, "kind", f"cooling_loops[{i}]", LOOP_KINDS))
        for i, d in enumerate(_list(data, "cooling_loops", "facility"))
    ]
    _unique([lp.name for lp in loops], "cooling_loops", "loop")
    loop_names = {lp.name for lp in loops}
    unit_dicts = _list(data, "cooling_units", "facility")
    units = [_unit(d, f"cooling_units[{i}]", loop_names) for i, d in enumerate(unit_dicts)]
    _unique([u.name for u in units], "cooling_units", "cooling unit")
    unit_by_name = {u.name: u for u in units}

    halls = []
    for h, hd in enumerate(_list(data, "halls", "facility")):
        hp = f"halls[{h}]"
        name = _get(hd, "name", hp, str)
        racks = []
        for r, rd in enumerate(_list(hd, "racks", hp)):
            rp = f"{hp}.racks[{r}]"
            cooled_by = tuple(_list(rd, "cooled_by", rp))
            for i, unit_name in enumerate(cooled_by):
                if unit_name not in unit_by_name:
                    raise LayoutError(f"{rp}.cooled_by[{i}]: unknown cooling unit {unit_name!r}")
                unit_hall = unit_by_name[unit_name].hall
                if unit_hall not in (None, name):
                    raise LayoutError(f"{rp}.cooled_by[{i}]: {unit_name!r} belongs to hall {unit_hall!r}")
            nodes = tuple(_node(nd, f"{rp}.nodes[{n}]") for n, nd in enumerate(_list(rd, "nodes", rp)))
            racks.append(
                Rack(
                    name=_get(rd, "name", rp, str),
                    row=_get(rd, "row", rp, int, required=False, default=1),
                    position=_get(rd, "position", rp, int, required=False, default=1),
                    cooled_by=cooled_by,
                    nodes=nodes,
                )
            )
        _unique([r.name for r in racks], f"{hp}.racks", "rack")
        halls.append(
            Hall(
                name=name,
                cooling_type=_choice(hd, "cooling_type", hp, COOLING_TYPES),
                contained=_get(hd, "contained", hp, bool, required=False, default=True),
                racks=tuple(racks),
            )
        )
    _unique([h.name for h in halls], "halls", "hall")
    hall_names = {h.name for h in halls}
    fans_of_hall: dict[str, str] = {}
    for i, u in enumerate(units):
        if u.hall is not None and u.hall not in hall_names:
            raise LayoutError(f"cooling_units[{i}].hall: unknown hall {u.hall!r}")
        if u.kind == SERVER_FANS:  # a hall's nodes' fans: one fan duty per hall
            if u.hall is None:
                raise LayoutError(f"cooling_units[{i}].hall: a {u.kind} unit belongs to a hall")
            if u.hall in fans_of_hall:
                raise LayoutError(f"cooling_units[{i}]: hall {u.hall!r} already has {fans_of_hall[u.hall]!r}; "
                                  f"one {u.kind} unit per hall")
            fans_of_hall[u.hall] = u.name

    # Hostnames and GPU uuids identify telemetry series: they must be unique site-wide.
    hostnames, uuids = [], []
    for h in halls:
        for r in h.racks:
            for n in r.nodes:
                hostnames.append(n.hostname)
                uuids.extend(g.uuid for g in n.gpus)
    for what, names in (("hostname", hostnames), ("GPU uuid", uuids)):
        seen = set()
        for name in names:
            if name in seen:
                raise LayoutError(f"halls: duplicate {what} {name!r}")
            seen.add(name)

    return Layout(
        site_slug=_get(site, "slug", "site", str),
        site_name=_get(site, "name", "site", str, required=False, default=""),
        climate=_choice(site, "climate", "site", CLIMATES, required=False, default="mixed"),
        loops=tuple(loops),
        units=tuple(units),
        halls=tuple(halls),
    )
