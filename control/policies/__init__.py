"""Control policies: the interface and registry (`base`) and the TWIN.md baselines (`baselines`).

Importing this package registers the baselines; it imports nothing from Django."""

from . import baselines, llm, mpc, rl  # noqa: F401 - registers fixed, trim_respond, pid, mpc, llm, rl
from .base import Policy, PolicyContext, Proposal, State, create, get, names, register

__all__ = ["Policy", "PolicyContext", "Proposal", "State", "create", "get", "names", "register"]
