"""The `vllm.general_plugins` entry point: vLLM calls `register()` in every process
it starts (engine core, workers), which is where the model runs. It binds the
shims only when the user's process asked for them (`import esamp.runtime` sets
DRIFTCHECK_SHIMS=1, which spawned processes inherit), so merely having
driftcheck installed changes nothing.
"""

from __future__ import annotations

import os

from driftcheck.live_reader import ENV_LIVE_DIR, observe_in_worker
from driftcheck.shims.hook_points import ENV_ENABLE

HOOK_POINT = "engine_process"
HANDLES = {"plugins.general_plugins": ("plugins/worker-v0-path", "plugins/worker-v1-path")}
ENV_PROBES = "DRIFTCHECK_PROBES"  # "1": attach the recording probe; "stress": the stress checks too


def register() -> None:
    if os.environ.get(ENV_LIVE_DIR):
        observe_in_worker()  # `driftcheck scan --live` is running: observe here too
    if os.environ.get(ENV_ENABLE) != "1":
        return
    from driftcheck.shims.install import install

    install()
    from esamp.controller import attach as attach_esamp

    attach_esamp()  # stays idle unless additional_config["esamp"]["enable"]
    probes = os.environ.get(ENV_PROBES)
    if probes == "1":
        from driftcheck.probes.recorder import attach

        attach()
    elif probes == "stress":
        from driftcheck.probes.stress_checks import attach

        attach()


def patches(ctx) -> list:
    return []  # the mechanism is the entry point itself (pyproject.toml)
