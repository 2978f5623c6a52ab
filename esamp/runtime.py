"""`import esamp.runtime`: bind ESamp's hook points on the installed vLLM.

Importing this module fingerprints the installed vLLM, selects the shims, and
applies them here, all or nothing; it also sets DRIFTCHECK_SHIMS=1 so that
vLLM's engine-core/worker processes (which load the `vllm.general_plugins`
entry point and inherit the environment) bind the same shims where the model
runs. An unknown contract for a needed surface raises ShimRefused naming the
surface, unless DRIFTCHECK_ALLOW_UNBOUND=1 (then it warns).
"""

from __future__ import annotations

import os

from driftcheck.shims.hook_points import ENV_ENABLE, HOOKS
from driftcheck.shims.install import ShimRefused, install, installed, uninstall
from esamp.controller import attach as attach_esamp

__all__ = ["HOOKS", "PLAN", "ShimRefused", "remove", "installed"]

PLAN = install()
os.environ[ENV_ENABLE] = "1"
CONTROLLER = attach_esamp()  # in-process engines; idle unless additional_config["esamp"]["enable"]


def remove() -> None:
    """Restore vLLM exactly, here; new engine processes start unshimmed."""
    uninstall()
    os.environ.pop(ENV_ENABLE, None)
