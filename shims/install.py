"""Bind the selected shims in this process: all or nothing, once, reversibly."""

from __future__ import annotations

import logging
import os

from driftcheck.shims.hook_points import ENV_ALLOW_UNBOUND, HOOKS
from driftcheck.shims.patching import Patch, ShimError, apply_all, restore_all
from driftcheck.shims.plan import ShimPlan, select_shims

log = logging.getLogger("driftcheck.shims")

_applied: list[Patch] | None = None
_plan: ShimPlan | None = None


class ShimRefused(ShimError):
    """The installed vLLM shows a contract no shim handles for a hook ESamp needs."""


def plan_for_installed() -> ShimPlan:
    """Quick fingerprint of the installed vLLM (static scan + getattr_static), then selection."""
    from driftcheck.live_reader import inspect_surfaces
    from driftcheck.scan import scan_tree
    from driftcheck.source_tree import locate_installed

    scan = scan_tree(locate_installed())
    live = inspect_surfaces()
    contracts = dict(scan.fingerprint.contracts)
    notes = {}
    for r in scan.results:
        seen = live.get(r.surface.id, {})
        for aspect in ("present", "descriptor", "signature"):
            static = r.observation.aspects.get(aspect)
            if aspect in seen and static is not None and seen[aspect] != static:
                contracts[r.surface.id] = None  # the imported code disagrees with its source
                notes[r.surface.id] = f"{aspect} {seen[aspect]} when imported but {static} in its source"
    return select_shims(contracts, notes)


def refusal_message(plan: ShimPlan) -> str:
    lines = "; ".join(u.render() for u in plan.unbound)
    return (f"driftcheck cannot bind ESamp's hooks on this vLLM: {lines}. "
            f"Run `driftcheck scan` for the full report (or set {ENV_ALLOW_UNBOUND}=1 to run without them).")


def install(plan: ShimPlan | None = None, fail_at: int | None = None) -> ShimPlan:
    """Apply every selected shim, or none. A second call is a no-op."""
    global _applied, _plan
    if _applied is not None:
        return _plan
    plan = plan or plan_for_installed()
    if plan.unbound:
        if os.environ.get(ENV_ALLOW_UNBOUND) != "1":
            raise ShimRefused(refusal_message(plan))
        log.warning("%s", refusal_message(plan) + " Continuing UNBOUND because " + ENV_ALLOW_UNBOUND + "=1.")
    patches = [p for module in plan.selected.values() for p in module.patches(plan.context)]
    _applied = apply_all(patches, fail_at=fail_at)
    _plan = plan
    HOOKS.bound = {hp: m.__name__ for hp, m in plan.selected.items()}
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
