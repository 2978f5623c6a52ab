"""The one patch driftcheck makes in a process where nobody bound the shims: it watches for ESamp
being asked for, so that `additional_config={"esamp": {"enable": True}}` is never silently ignored.

`EngineArgs.create_engine_config` (surface engine.create_config) builds the VllmConfig every
engine process receives; LLM, LLMEngine, AsyncLLM and `vllm serve` all build it in the process that
then starts the engine. When the config it returns enables ESamp and the shims are not bound here,
`on_requested(vllm_config)` runs before the config is handed on: the plugin (an app) binds the
shims there exactly as `import esamp.runtime` does, all or nothing, refusing with ShimRefused on
an unknown contract, and engine processes started afterwards inherit the plan.
"""

from __future__ import annotations

from typing import Callable

from driftcheck.patching import Patch

HANDLES = {"engine.create_config": ("create_config/returns-config",)}


def esamp_enabled(vllm_config) -> bool:
    extra = getattr(vllm_config, "additional_config", None) or {}
    esamp = extra.get("esamp") if isinstance(extra, dict) else None
    return isinstance(esamp, dict) and bool(esamp.get("enable"))


def patches(engine_args_class, on_requested: Callable[[object], None]) -> list[Patch]:
    def make(original):
        def create_engine_config(self, *args, **kwargs):
            config = original(self, *args, **kwargs)
            if esamp_enabled(config):
                on_requested(config)
            return config

        return create_engine_config

    return [Patch(engine_args_class, "create_engine_config", make, __name__, surface="engine.create_config")]
