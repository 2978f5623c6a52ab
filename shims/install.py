"""Bind the planned shims in this process: all or nothing, once, reversibly.

The plan comes from the caller, from the environment (env.PLAN: handed down by
the process that computed it), or from the `driftcheck plan` app run in a child
process. This module never scans: the runtime layer does not import a reader.

Before anything is patched, every object a shim is about to wrap is checked
against the contract the plan chose for its surface (signature and descriptor
kind, read with inspect off the very attribute that will be wrapped): imported
code that is not what the scan read from the source is refused like an
unknown contract, naming the surface.
"""

from __future__ import annotations

import inspect
import logging
import os
import subprocess
import sys

from driftcheck import env
from driftcheck.contracts.matching import aspect_drifts, expected_aspects, with_derived
from driftcheck.contracts.runners import NAMES, RUNNERS
from driftcheck.contracts.values import Signature, descriptor_of
from driftcheck.errors import DriftcheckError
from driftcheck.patching import Patch, PatchError, apply_all, restore_all
from driftcheck.shims.hook_points import HOOKS
from driftcheck.shims.plan import ShimPlan, Unbound, catalog_by_id

log = logging.getLogger("driftcheck.shims")

ShimError = PatchError  # what a shim raises when it cannot bind; vLLM is left as it was
PLAN_TIMEOUT_S = 120

_applied: list[Patch] | None = None
_plan: ShimPlan | None = None


class ShimRefused(ShimError):
    """The installed vLLM shows a contract no shim handles for a hook ESamp needs."""


def plan_from_env() -> ShimPlan | None:
    """The plan a parent process handed down, if any."""
    text = os.environ.get(env.PLAN)
    if not text:
        return None
    try:
        return ShimPlan.deserialize(text)
    except DriftcheckError as exc:
        raise ShimRefused(str(exc)) from None


def request_plan() -> ShimPlan:
    """Ask the `driftcheck plan` app (a child process: static scan of the vLLM this Python
    imports, then shim selection) for the plan."""
    try:
        proc = subprocess.run([sys.executable, "-m", "driftcheck", "plan"], capture_output=True, text=True,
                              timeout=PLAN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ShimRefused(f"`driftcheck plan` did not answer in {PLAN_TIMEOUT_S} s") from None
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        why = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        raise ShimRefused(f"driftcheck cannot plan ESamp's hooks on this vLLM: {why}")
    return ShimPlan.deserialize(lines[-1])


def refusal_message(plan: ShimPlan, runners: list[str]) -> str:
    lines = "; ".join(f"{NAMES[r]}: " + "; ".join(u.render() for u in plan.unbound.get(r, [])) for r in runners)
    return (f"driftcheck cannot bind ESamp's hooks on this vLLM: {lines}. "
            f"Run `driftcheck scan` for the full report (or set {env.ALLOW_UNBOUND}=1 to run without them).")


def this_platform() -> str:
    """'cuda' or 'cpu': the platform vLLM runs on in this process (the plan says which runners an
    engine here is expected to build)."""
    try:
        from vllm.platforms import current_platform

        return "cpu" if current_platform.is_cpu() else "cuda"
    except Exception:  # noqa: BLE001 - a vLLM too old or broken to say: ask torch
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"


def imported_mismatches(plan: ShimPlan, patches: list[Patch]) -> dict[str, str]:
    """surface id -> how the object about to be wrapped differs from the contract the plan chose."""
    surfaces = catalog_by_id()
    out = {}
    for p in patches:
        contract_id = plan.context.contract_id(p.surface) if p.surface else None
        if contract_id is None:
            continue
        surface = surfaces[p.surface]
        expected = expected_aspects(surface, surface.contract(contract_id))
        raw = inspect.getattr_static(p.owner, p.name, None)
        if raw is None:
            out[p.surface] = f"{p.label} does not exist when imported"
            continue
        seen = {"descriptor": descriptor_of(raw) if isinstance(p.owner, type) else "function"}
        func = raw.__func__ if isinstance(raw, (staticmethod, classmethod)) else raw
        seen["signature"] = Signature.of_callable(func, drop_first=seen["descriptor"] in ("instance", "classmethod"))
        seen = with_derived(surface, seen)
        drifts = [d for a in ("descriptor", "signature", "leading") if a in expected
                  for d in aspect_drifts(a, expected[a], seen[a])]
        if drifts:
            out[p.surface] = ("; ".join(d.render() for d in drifts)
                              + f" when imported, but its source matched {contract_id}")
    return out


def install(plan: ShimPlan | None = None, fail_at: int | None = None) -> ShimPlan:
    """Apply every selected shim, or none. A second call is a no-op."""
    global _applied, _plan
    if _applied is not None:
        return _plan
    plan = plan or plan_from_env() or request_plan()
    by_module = {m.__name__: m.patches(plan.context) for m in plan.modules()}
    for surface, why in imported_mismatches(plan, [p for ps in by_module.values() for p in ps]).items():
        for runner in plan.runners:
            for hook_point, module in list(plan.selected[runner].items()):
                if surface in module.HANDLES:
                    del plan.selected[runner][hook_point]
                    plan.unbound[runner].append(Unbound(hook_point, surface, why, module.__name__.rsplit(".", 1)[-1]))
    # Refuse now when a runner an engine here is expected to build is not covered; the runner
    # guard refuses later, in the engine process, for any other runner vLLM ends up building.
    expected = plan.expected.get(this_platform()) or plan.runners
    uncovered = [r for r in expected if not plan.bound(r)]
    if uncovered:
        if os.environ.get(env.ALLOW_UNBOUND) != "1":
            raise ShimRefused(refusal_message(plan, uncovered))
        log.warning("%s", refusal_message(plan, uncovered) + f" Continuing UNBOUND because {env.ALLOW_UNBOUND}=1.")
    modules = plan.modules()
    patches = [p for m in modules for p in by_module[m.__name__]]
    _applied = apply_all(patches, fail_at=fail_at)
    _plan = plan
    HOOKS.bound = {}
    for m in modules:
        HOOKS.bound.setdefault(m.HOOK_POINT, []).append(m.__name__)
    HOOKS.runner_refusals = {r: ("; ".join(u.render() for u in plan.unbound.get(r, []))
                                 or "the plan does not know this runner")
                             for r in RUNNERS if not plan.bound(r)}
    return plan


def uninstall() -> None:
    """Restore every wrapped attribute exactly as it was."""
    global _applied, _plan
    if _applied is None:
        return
    restore_all(_applied)
    _applied = _plan = None
    HOOKS.reset()


def installed() -> bool:
    return _applied is not None


def current_plan() -> ShimPlan | None:
    return _plan
