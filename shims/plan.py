"""Shim selection: which shim binds each hook point, chosen by the fingerprint.

Every shim module declares HOOK_POINT and HANDLES (surface -> contract ids it
binds). A shim fits when the fingerprint's contract for each of its surfaces
is one it handles, so a release that mixes old and new contracts still gets
the right set; a release version string is never consulted. No torch or vLLM
import here: `driftcheck scan` uses this to say which shim handles what.

The plan is computed once, by an app (`driftcheck plan`, which `import
esamp.runtime` runs; or the plugin entry point where nobody handed one down),
and travels to engine processes serialized in the environment (env.PLAN), so
no engine process rescans. Generated shims (`driftcheck propose`, found on
env.SHIM_PATH) are loaded here, in the runtime layer; the catalog merges the
contracts they declare through `catalog()`.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from types import ModuleType

from driftcheck import env
from driftcheck.contracts.catalog import Contract, Surface, with_contracts
from driftcheck.errors import BadInput

SHIM_MODULES = (
    "driftcheck.shims.prepare_attn_first",
    "driftcheck.shims.prepare_logits_first",
    "driftcheck.shims.sampler_post_filter",
    "driftcheck.shims.layer_taps",
    "driftcheck.shims.request_events",
    "driftcheck.shims.plugin",
)
HOOK_POINTS = ("prepare_view", "post_filter", "layer_taps", "request_events", "engine_process")
GENERATED_PACKAGE = "driftcheck_generated_shims"  # the import name generated shim modules get

_generated: dict[str, ModuleType] = {}  # file path -> loaded module


def builtin_shim_modules() -> list[ModuleType]:
    return [importlib.import_module(name) for name in SHIM_MODULES]


def generated_shim_modules() -> list[ModuleType]:
    """Shim modules from DRIFTCHECK_SHIM_PATH (what `driftcheck propose` writes), in name order.
    The variable reaches vLLM's engine processes, which inherit the environment."""
    import importlib.util
    import os
    import sys
    from pathlib import Path

    out = []
    for folder in filter(None, os.environ.get(env.SHIM_PATH, "").split(os.pathsep)):
        if not Path(folder).is_dir():
            raise BadInput(f"{env.SHIM_PATH}: {folder} is not a directory")
        for path in sorted(Path(folder).glob("*.py")):
            if path.name.startswith(("_", "test_")):
                continue
            key = str(path.resolve())
            if key not in _generated:
                name = f"{GENERATED_PACKAGE}.{path.stem}"
                spec = importlib.util.spec_from_file_location(name, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module  # before running it: dataclasses look their module up there
                try:
                    spec.loader.exec_module(module)
                except Exception as exc:  # noqa: BLE001 - a broken generated file is bad input, named
                    del sys.modules[name]
                    raise BadInput(f"generated shim {path} does not load: {type(exc).__name__}: {exc}") from None
                for needed in ("HOOK_POINT", "HANDLES", "patches"):
                    if not hasattr(module, needed):
                        raise BadInput(f"generated shim {path} has no {needed}")
                _generated[key] = module
            out.append(_generated[key])
    return out


def generated_contracts() -> dict[str, tuple[Contract, ...]]:
    """surface id -> the contracts generated shims declare (their CONTRACTS)."""
    out: dict[str, tuple] = {}
    for module in generated_shim_modules():
        for surface, contracts in getattr(module, "CONTRACTS", {}).items():
            out[surface] = out.get(surface, ()) + tuple(contracts)
    return out


def shim_modules() -> list[ModuleType]:
    """Built-in shims first (reviewed ones win a tie), then generated ones."""
    return builtin_shim_modules() + generated_shim_modules()


def catalog() -> tuple[Surface, ...]:
    """The surface catalog plus the contracts generated shims declare."""
    return with_contracts(generated_contracts())


def catalog_by_id() -> dict[str, Surface]:
    return {s.id: s for s in catalog()}


def shim_module(name: str) -> ModuleType:
    """A shim module by its import name, built-in or generated."""
    for module in shim_modules():
        if module.__name__ == name:
            return module
    raise BadInput(f"the shim plan names {name}, which is not installed (built in or on {env.SHIM_PATH})")


@dataclass
class ShimContext:
    contracts: dict  # surface id -> contract id (None: unknown)

    def contract_id(self, surface_id: str) -> str | None:
        return self.contracts.get(surface_id)

    def contract(self, surface_id: str) -> Contract:
        return catalog_by_id()[surface_id].contract(self.contracts[surface_id])


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
        """What the scan report prints."""
        return {
            "selected": {hp: m.__name__ for hp, m in self.selected.items()},
            "unbound": [u.render() for u in self.unbound],
        }

    # -- the hand-down to engine processes (env.PLAN)
    def serialize(self) -> str:
        return json.dumps({
            "contracts": self.context.contracts,
            "selected": {hp: m.__name__ for hp, m in self.selected.items()},
            "unbound": [[u.hook_point, u.surface, u.seen, u.nearest_shim] for u in self.unbound],
        }, sort_keys=True)

    @classmethod
    def deserialize(cls, text: str) -> ShimPlan:
        try:
            data = json.loads(text)
            plan = cls(ShimContext(dict(data["contracts"])))
            plan.selected = {hp: shim_module(name) for hp, name in data["selected"].items()}
            plan.unbound = [Unbound(*u) for u in data["unbound"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise BadInput(f"{env.PLAN} does not hold a shim plan: {type(exc).__name__}: {exc}") from None
        return plan


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
