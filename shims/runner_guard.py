"""The runner guard: after the plan is bound, every model runner vLLM constructs is checked
against it. A runner family whose hooks the plan could not bind (or that it does not know)
stops the engine before the runner exists, with ShimRefused naming the runner class and the
rule that chose it: ESamp never runs on a runner nothing of ours is bound to.

It wraps `__init__` of each runner family's base class that the installed vLLM has (the V1
GPUModelRunner, which the CPU worker's CPUModelRunner subclasses, and Model Runner V2's, which
the CPU V2 runner subclasses).
"""

from __future__ import annotations

import importlib

from driftcheck.contracts.runners import CLASSES, NAMES
from driftcheck.patching import Patch
from driftcheck.shims.hook_points import HOOKS

HOOK_POINT = "runner_guard"
HANDLES = {"runner.selection": ("runner_select/v1-only", "runner_select/env-only", "runner_select/allow-list-dense",
                                "runner_select/allow-list", "runner_select/dense-default",
                                "runner_select/dense-default-2", "runner_select/default-all")}


def runner_classes() -> dict[str, type]:
    """runner family -> its base class, for the families the installed vLLM has."""
    out = {}
    for family, target in CLASSES.items():
        module, name = target.split(":")
        try:
            out[family] = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue  # not in this release (no Model Runner V2 before 0.12)
    return out


def patches(ctx) -> list[Patch]:
    def make(family: str):
        def make_init(original):
            def __init__(self, *args, **kwargs):
                refusal = HOOKS.runner_refusals.get(family)
                if refusal is not None:
                    from driftcheck.shims.install import ShimRefused

                    cls = type(self)
                    raise ShimRefused(f"vLLM is building {NAMES[family]} ({cls.__module__}.{cls.__qualname__}), "
                                      f"and driftcheck has no shims bound for it: {refusal}. Run `driftcheck scan` "
                                      f"for the runner verdicts (or set VLLM_USE_V2_MODEL_RUNNER to choose the "
                                      f"other runner)")
                HOOKS.runner_built = family
                original(self, *args, **kwargs)

            return __init__

        return make_init

    return [Patch(cls, "__init__", make(family), __name__) for family, cls in runner_classes().items()]
