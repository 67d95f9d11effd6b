"""The one policy interface every FuseDC controller implements, and the registry that names them.

Pure Python (no Django), so the twin's evaluation, the gym env and tests can drive policies directly.
`State`, `Proposal`, `Envelope` and `PolicyContext` are defined twin-side in `facility.twin.state`
(control imports facility, never the reverse) and re-exported here.

A policy is called every `decision_interval_s` seconds of plant time with a `State` and returns
`Proposal`s. It should keep each proposal inside its envelope (`SetpointState.limit`, recording the
reasons in `Proposal.clipped`); the safety layer (`EnvelopeGuard`, and in the product the control app's
envelope and approval) clips again regardless.

The registry: `@register` on a `Policy` subclass files it under its `name`; `get(name)` returns the
class, `create(name, **params)` an instance, `names()` the sorted names. The Django control app imports
`control.policies` at start-up (which registers the baselines); a management command resolves a name
here and hands the instance to `facility.twin.evaluation.evaluate`, which never sees the registry.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from facility.twin.state import Envelope, HallState, PolicyContext, Proposal, SetpointState, State

__all__ = [
    "Envelope",
    "HallState",
    "Policy",
    "PolicyContext",
    "Proposal",
    "SetpointState",
    "State",
    "create",
    "get",
    "names",
    "register",
]


class Policy(ABC):
    name: ClassVar[str] = ""
    decision_interval_s: float = 60.0

    def reset(self, context: PolicyContext) -> None:  # noqa: B027 - stateless policies need nothing
        """Called once before a run (and on every env reset) with the envelopes and hall types."""

    @abstractmethod
    def propose(self, state: State) -> list[Proposal]:
        """Setpoint changes wanted now; an empty list holds everything."""

    @staticmethod
    def limited(sp: SetpointState, target: float, rationale: str, **effect) -> Proposal | None:
        """A proposal for `target` clipped into `sp`'s envelope, or None if it would not move the point."""
        value, reasons = sp.limit(target)
        if abs(value - sp.command) < 1e-9:
            return None
        env = sp.envelope
        return Proposal(env.unit, env.name, value, rationale, dict(effect), requested=float(target),
                        clipped=reasons)


_REGISTRY: dict[str, type[Policy]] = {}


def register(cls: type[Policy]) -> type[Policy]:
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} has no name")
    other = _REGISTRY.get(cls.name)
    if other is not None and other is not cls:
        raise ValueError(f"policy name {cls.name!r} is taken by {other.__qualname__}")
    _REGISTRY[cls.name] = cls
    return cls


def get(name: str) -> type[Policy]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"no policy {name!r}; registered: {', '.join(names()) or 'none'}") from None


def create(name: str, **params) -> Policy:
    return get(name)(**params)


def names() -> list[str]:
    return sorted(_REGISTRY)
