"""The `vllm.general_plugins` entry point (pyproject.toml): vLLM calls `register()` in every
process it starts (the frontend, the engine core, the workers), which is how the shims
reach the processes where the model runs.

It binds the shims when the user's process asked for them (`import esamp.runtime` sets
env.SHIMS=1, which spawned processes inherit), or when this process builds an engine config
that enables ESamp (`additional_config={"esamp": {"enable": True}}`, e.g. `vllm serve
--additional-config`): then it binds them right there, exactly as `import esamp.runtime`
would (shims/esamp_request.py). Otherwise merely having driftcheck installed changes nothing.
The plan comes down in env.PLAN from the process that computed it; where nobody handed one
down (a server started from the command line), this entry point, an app, computes it here
with the static scan.
"""

from __future__ import annotations

import os
import sys

from driftcheck import env


def _plan():
    from driftcheck.shims.install import plan_from_env

    plan = plan_from_env()
    if plan is not None:
        return plan
    from driftcheck.readers.source_tree import locate_installed
    from driftcheck.scan import scan_tree

    return scan_tree(locate_installed()).plan


def register() -> None:
    if os.environ.get(env.LIVE_DIR):
        from driftcheck.readers.live import observe_in_worker

        observe_in_worker()  # `driftcheck scan --live` is running: observe here too
    if os.environ.get(env.SHIMS) != "1":
        _watch_for_esamp()
        return
    _bind()


def _bind() -> None:
    """Bind the shims in this process, then ESamp and the probes asked for."""
    fault = os.environ.get(env.FAULT)
    if fault:
        from driftcheck.probes import faults

        faults.inject(fault)  # before the shims bind: the probes' own tests
    from driftcheck.shims.install import install

    plan = install(_plan())
    os.environ[env.PLAN] = plan.serialize()  # processes started from this one bind the same plan
    from esamp.controller import attach as attach_esamp

    attach_esamp()  # stays idle unless additional_config["esamp"]["enable"]
    probes = os.environ.get(env.PROBES)
    if probes == "1":
        from driftcheck.probes.recorder import attach

        attach()
    elif probes == "stress":
        from driftcheck.probes.stress_checks import attach

        attach()


_watching = False


def _watch_for_esamp() -> None:
    """Nobody bound the shims here: if this process builds an engine config that enables ESamp,
    bind them right then (shims/esamp_request.py), as `import esamp.runtime` would, or refuse."""
    global _watching
    arg_utils = sys.modules.get("vllm.engine.arg_utils")  # loaded where engine configs are built
    if _watching or arg_utils is None or not hasattr(arg_utils, "EngineArgs"):
        return
    from driftcheck.patching import apply_all
    from driftcheck.shims import esamp_request

    def on_requested(vllm_config) -> None:
        from driftcheck.shims.install import installed

        if installed():
            return
        os.environ[env.SHIMS] = "1"  # engine processes started from here bind the same plan
        try:
            _bind()
        except BaseException:
            os.environ.pop(env.SHIMS, None)
            raise

    apply_all(esamp_request.patches(arg_utils.EngineArgs, on_requested))
    _watching = True
