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
from driftcheck.contracts.runners import NAMES, RULES, RUNNERS
from driftcheck.errors import BadInput

SHIM_MODULES = (
    "driftcheck.shims.prepare_attn_first",
    "driftcheck.shims.prepare_logits_first",
    "driftcheck.shims.prepare_v2",
    "driftcheck.shims.sampler_post_filter",
    "driftcheck.shims.sampler_v2_post_filter",
    "driftcheck.shims.layer_taps",
    "driftcheck.shims.request_events",
    "driftcheck.shims.request_events_v2",
    "driftcheck.shims.request_identity",
    "driftcheck.shims.plugin",
    "driftcheck.shims.runner_guard",
)
#: Bound by the plugin where no plan is bound yet (not chosen by a plan): it watches for ESamp being asked for.
UNPLANNED_SHIMS = ("driftcheck.shims.esamp_request",)
#: Every hook point a model runner needs bound before ESamp can run on it. A shim module serves
#: one hook point for one runner family (RUNNER "v1" / "v2") or for every runner (RUNNER None).
HOOK_POINTS = ("prepare_view", "post_filter", "layer_taps", "request_events", "request_identity", "engine_process",
               "runner_guard")
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
    """Per model-runner family: the shim each hook point gets, or why none fits.

    `selected[runner]` / `unbound[runner]`: a family absent from the release has neither.
    `expected[platform]`: the runners an engine on that platform is expected to build for
    ESamp's architectures (computed by the scan, from the runner-selection rule).
    """

    context: ShimContext
    selected: dict = field(default_factory=dict)  # runner -> {hook point -> shim module}
    unbound: dict = field(default_factory=dict)  # runner -> [Unbound]
    expected: dict = field(default_factory=dict)  # platform -> [runner]

    @property
    def runners(self) -> list[str]:
        """The runner families the release has."""
        return [r for r in RUNNERS if r in self.selected or r in self.unbound]

    def bound(self, runner: str) -> bool:
        return runner in self.selected and not self.unbound.get(runner)

    def modules(self) -> list[ModuleType]:
        """Every module to apply: the shims of each fully bound runner, each once."""
        out = []
        for runner in self.runners:
            if self.bound(runner):
                out += [m for m in self.selected[runner].values() if m not in out]
        return out

    def all_unbound(self) -> list[Unbound]:
        return [u for r in self.runners for u in self.unbound.get(r, [])]

    def shim_for(self, surface_id: str) -> str | None:
        for runner in self.runners:
            for module in self.selected.get(runner, {}).values():
                if surface_id in module.HANDLES:
                    return module.__name__.rsplit(".", 1)[-1]
        for name in UNPLANNED_SHIMS:
            if surface_id in importlib.import_module(name).HANDLES:
                return name.rsplit(".", 1)[-1]
        return None

    def rule(self) -> str | None:
        contract = self.context.contract("runner.selection") if self.context.contract_id("runner.selection") else None
        return contract.meaning.get("rule") if contract else None

    def describe_selection(self) -> str:
        rule = self.rule()
        return (f"runner selection: {self.context.contract_id('runner.selection') or 'an unknown contract'}: "
                f"{RULES.get(rule, 'unknown rule')}")

    def describe_runner(self, runner: str) -> str:
        """One line: whether driftcheck binds every hook of a runner family, and with which shims."""
        if self.bound(runner):
            shims = ", ".join(m.__name__.rsplit(".", 1)[-1] for m in self.selected[runner].values())
            return f"{NAMES[runner]}: every hook bound ({shims})"
        missing = "; ".join(u.render() for u in self.unbound.get(runner, [])) or "the release has no such runner"
        return f"{NAMES[runner]}: NOT bound: {missing}"

    def to_json(self) -> dict:
        """What the scan report prints."""
        return {
            "selected": {r: {hp: m.__name__ for hp, m in s.items()} for r, s in self.selected.items()},
            "unbound": {r: [u.render() for u in us] for r, us in self.unbound.items()},
            "expected": self.expected,
        }

    # -- the hand-down to engine processes (env.PLAN)
    def serialize(self) -> str:
        return json.dumps({
            "contracts": self.context.contracts,
            "selected": {r: {hp: m.__name__ for hp, m in s.items()} for r, s in self.selected.items()},
            "unbound": {r: [[u.hook_point, u.surface, u.seen, u.nearest_shim] for u in us]
                        for r, us in self.unbound.items()},
            "expected": self.expected,
        }, sort_keys=True)

    @classmethod
    def deserialize(cls, text: str) -> ShimPlan:
        try:
            data = json.loads(text)
            plan = cls(ShimContext(dict(data["contracts"])))
            plan.selected = {r: {hp: shim_module(name) for hp, name in s.items()} for r, s in data["selected"].items()}
            plan.unbound = {r: [Unbound(*u) for u in us] for r, us in data["unbound"].items()}
            plan.expected = {k: list(v) for k, v in data.get("expected", {}).items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BadInput(f"{env.PLAN} does not hold a shim plan: {type(exc).__name__}: {exc}") from None
        return plan


def _family_absent(runner: str, contracts: dict) -> bool:
    """A runner family the release does not have: each of its surfaces matched a contract that says
    it is absent (present="no")."""
    surfaces = [s for s in catalog() if s.runner == runner]
    if not surfaces:
        return False
    for s in surfaces:
        contract = s.contract(contracts.get(s.id) or "")
        if contract is None or str(contract.aspects.get("present", "yes")) != "no":
            return False
    return True


def select_shims(contracts: dict, notes: dict | None = None) -> ShimPlan:
    """For each runner family the release has, the shim of each hook point: a shim fits when every
    surface it handles shows a contract it handles. `notes`: why a surface's contract is None,
    when the caller knows (shown in refusals)."""
    notes = notes or {}
    plan = ShimPlan(ShimContext(dict(contracts)))
    modules = shim_modules()
    for runner in RUNNERS:
        if _family_absent(runner, contracts):
            continue
        plan.selected[runner], plan.unbound[runner] = {}, []
        for hook_point in HOOK_POINTS:
            candidates = [m for m in modules if m.HOOK_POINT == hook_point and getattr(m, "RUNNER", None) in (runner, None)]
            misses = {
                m.__name__: [s for s, allowed in m.HANDLES.items() if contracts.get(s) not in allowed]
                for m in candidates
            }
            fits = [m for m in candidates if not misses[m.__name__]]
            if fits:
                plan.selected[runner][hook_point] = fits[0]
                continue
            nearest = min(candidates, key=lambda m: len(misses[m.__name__]))
            for surface in misses[nearest.__name__]:
                plan.unbound[runner].append(Unbound(hook_point, surface, contracts.get(surface) or notes.get(surface),
                                                    nearest.__name__.rsplit(".", 1)[-1]))
    return plan
