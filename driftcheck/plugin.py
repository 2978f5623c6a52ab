"""The `vllm.general_plugins` entry point (pyproject.toml): vLLM calls `register()` in every
process it starts (the frontend, the engine core, the workers), which is how the shims
reach the processes where the model runs.

It binds the shims only when the user's process asked for them (`import esamp.runtime`
sets env.SHIMS=1, which spawned processes inherit), so merely having driftcheck installed
changes nothing. The plan comes down in env.PLAN from the process that computed it; where
nobody handed one down (a server started from the command line with env.SHIMS=1), this
entry point, an app, computes it here with the static scan.
"""

from __future__ import annotations

import os

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
        return
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
