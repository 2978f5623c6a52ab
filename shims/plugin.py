"""The engine-process shim: vLLM's `vllm.general_plugins` entry-point mechanism is how the
shims reach the processes where the model runs. It wraps nothing itself; the entry
point that vLLM calls is the app driftcheck.plugin:register (see pyproject.toml)."""

from __future__ import annotations

HOOK_POINT = "engine_process"
HANDLES = {"plugins.general_plugins": ("plugins/worker-v0-path", "plugins/worker-v1-path")}


def patches(ctx) -> list:
    return []  # the mechanism is the entry point itself
