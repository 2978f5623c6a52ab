"""Shim selection: which shim binds each hook point, chosen by the fingerprint.

Every shim module declares HOOK_POINT and HANDLES (surface -> contract ids it
binds). A shim fits when the fingerprint's contract for each of its surfaces
is one it handles, so a release that mixes old and new contracts still gets
the right set; a release version string is never consulted. No torch or vLLM
import here: `driftcheck scan` uses this to say which shim handles what.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType

from driftcheck.catalog import SURFACES_BY_ID, Contract

SHIM_MODULES = (
    "driftcheck.shims.prepare_attn_first",
    "driftcheck.shims.prepare_logits_first",
    "driftcheck.shims.sampler_post_filter",
    "driftcheck.shims.layer_taps",
    "driftcheck.shims.request_events",
    "driftcheck.shims.plugin",
)
HOOK_POINTS = ("prepare_view", "post_filter", "layer_taps", "request_events", "engine_process")


def shim_modules() -> list[ModuleType]:
    return [importlib.import_module(name) for name in SHIM_MODULES]


@dataclass
class ShimContext:
    contracts: dict  # surface id -> contract id (None: unknown)

    def contract_id(self, surface_id: str) -> str | None:
        return self.contracts.get(surface_id)

    def contract(self, surface_id: str) -> Contract:
        return SURFACES_BY_ID[surface_id].contract(self.contracts[surface_id])


@dataclass
class Unbound:
    hook_point: str
    surface: str
    seen: str | None  # the contract seen (None: unknown)
    nearest_shim: str

    def render(self) -> str:
        seen = self.seen or "an unknown contract"
        return (f"hook point {self.hook_point!r}: surface {self.surface} shows {seen}, "
                f"which no shim handles (nearest: {self.nearest_shim})")


@dataclass
class ShimPlan:
    context: ShimContext
    selected: dict = field(default_factory=dict)  # hook point -> shim module
    unbound: list = field(default_factory=list)  # [Unbound]

    def shim_for(self, surface_id: str) -> str | None:
        for module in self.selected.values():
            if surface_id in module.HANDLES:
                return module.__name__.rsplit(".", 1)[-1]
        return None

    def to_json(self) -> dict:
        return {
            "selected": {hp: m.__name__ for hp, m in self.selected.items()},
            "unbound": [u.render() for u in self.unbound],
        }


def select_shims(contracts: dict, notes: dict | None = None) -> ShimPlan:
    """`notes`: why a surface's contract is None, when the caller knows (shown in refusals)."""
    notes = notes or {}
    plan = ShimPlan(ShimContext(dict(contracts)))
    modules = shim_modules()
    for hook_point in HOOK_POINTS:
        candidates = [m for m in modules if m.HOOK_POINT == hook_point]
        misses = {
            m.__name__: [s for s, allowed in m.HANDLES.items() if contracts.get(s) not in allowed]
            for m in candidates
        }
        fits = [m for m in candidates if not misses[m.__name__]]
        if fits:
            plan.selected[hook_point] = fits[0]
            continue
        nearest = min(candidates, key=lambda m: len(misses[m.__name__]))
        for surface in misses[nearest.__name__]:
            plan.unbound.append(Unbound(hook_point, surface, contracts.get(surface) or notes.get(surface),
                                        nearest.__name__.rsplit(".", 1)[-1]))
    return plan
