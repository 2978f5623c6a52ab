"""`import esamp.runtime`: bind ESamp's hook points on the installed vLLM.

Importing this module gets the shim plan for the vLLM this Python imports (handed
down in env.PLAN, or from `driftcheck plan`, a child process: the runtime never
scans), checks every object it is about to wrap against the plan's contracts, and
applies the shims here, all or nothing. It sets env.SHIMS=1 and env.PLAN so that
vLLM's engine-core and worker processes (which load the `vllm.general_plugins`
entry point and inherit the environment) bind the same plan where the model runs.
An unknown contract for a needed surface raises ShimRefused naming the surface,
unless DRIFTCHECK_ALLOW_UNBOUND=1 (then it warns).
"""

from __future__ import annotations

import os

from driftcheck import env
from driftcheck.shims.hook_points import HOOKS
from driftcheck.shims.install import ShimRefused, install, installed, uninstall
from esamp.controller import attach as attach_esamp

__all__ = ["HOOKS", "PLAN", "ShimRefused", "remove", "installed"]

PLAN = install()
os.environ[env.PLAN] = PLAN.serialize()  # engine processes started from here bind this very plan
os.environ[env.SHIMS] = "1"
CONTROLLER = attach_esamp()  # in-process engines; idle unless additional_config["esamp"]["enable"]


def remove() -> None:
    """Restore vLLM exactly, here; new engine processes start unshimmed."""
    uninstall()
    os.environ.pop(env.SHIMS, None)
    os.environ.pop(env.PLAN, None)
