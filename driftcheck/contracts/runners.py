"""Model runners: which one a vLLM worker builds, from the selection rule the scan matched.

vLLM has two model runners: the V1 `GPUModelRunner` (vllm/v1/worker/gpu_model_runner.py; the
CPU worker's `CPUModelRunner` subclasses it) and Model Runner V2 (vllm/v1/worker/gpu/). Which
one a worker builds depends on the release (the `runner.selection` surface: its contract's
`meaning["rule"]`), the platform, the architecture and VLLM_USE_V2_MODEL_RUNNER. Pure logic:
the catalog supplies the rule, the caller the architecture and the environment.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

V1, V2 = "v1", "v2"
RUNNERS = (V1, V2)
NAMES = {V1: "V1 GPUModelRunner", V2: "Model Runner V2"}
#: The runner classes, by family (what the runner guard checks the constructed runner against).
CLASSES = {V1: "vllm.v1.worker.gpu_model_runner:GPUModelRunner", V2: "vllm.v1.worker.gpu.model_runner:GPUModelRunner"}
PLATFORMS = ("cuda", "cpu")

#: The selection rules, as the catalog's runner.selection contracts name them in meaning["rule"].
RULES = {
    "v1-only": "the release has no Model Runner V2",
    "env-only": "V2 only with VLLM_USE_V2_MODEL_RUNNER=1",
    "allow-list-dense": "V2 by default for allow-listed architectures that are dense and unquantized",
    "allow-list": "V2 by default for allow-listed architectures",
    "dense-default": "V2 by default for allow-listed architectures and every dense (non-MoE) model",
    "default-all": "V2 by default for every architecture (with Triton, and no feature V2 lacks)",
}

#: The architectures ESamp supports (its layer taps bind Qwen2 and Llama decoder layers).
ESAMP_ARCHITECTURES = ("Qwen2ForCausalLM", "LlamaForCausalLM")

_MOE_KEYS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts", "num_experts_per_tok")


@dataclass(frozen=True)
class Architecture:
    name: str
    is_moe: bool = False
    quantized: bool = False

    @classmethod
    def from_model_dir(cls, path: str | Path) -> Architecture:
        """The first architecture of a model directory's config.json, and whether it is MoE or quantized."""
        config = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
        text = config.get("text_config") or {}
        names = config.get("architectures") or []
        if not names:
            raise ValueError(f"{path}/config.json names no architecture")
        moe = any((config.get(k) or text.get(k) or 0) for k in _MOE_KEYS)
        return cls(names[0], bool(moe), "quantization_config" in config)


@dataclass(frozen=True)
class Verdict:
    platform: str
    architecture: str
    runner: str
    why: str


def env_choice(value: str | None) -> bool | None:
    """VLLM_USE_V2_MODEL_RUNNER as vLLM reads it: unset = no choice."""
    if value is None or value.strip() == "":
        return None
    return value.strip().lower() in ("1", "true")


def gpu_runner(rule: str, arch: Architecture, env_value: str | None, allow_list: tuple[str, ...] | None) -> Verdict:
    """The runner a CUDA worker builds for `arch` under `rule` (with Triton and no feature V2 lacks)."""
    choice = env_choice(env_value)
    if rule == "v1-only":
        return Verdict("cuda", arch.name, V1, RULES[rule])
    if choice is not None:
        return Verdict("cuda", arch.name, V2 if choice else V1, f"VLLM_USE_V2_MODEL_RUNNER={env_value}")
    allowed = arch.name in (allow_list or ())
    if rule == "env-only":
        v2, why = False, "VLLM_USE_V2_MODEL_RUNNER is not set"
    elif rule == "allow-list-dense":
        v2 = allowed and not arch.is_moe and not arch.quantized
        why = f"{arch.name} is {'' if allowed else 'not '}on the allow-list" + (", MoE" if arch.is_moe else "")
    elif rule == "allow-list":
        v2, why = allowed, f"{arch.name} is {'' if allowed else 'not '}on the allow-list"
    elif rule == "dense-default":
        v2 = allowed or not arch.is_moe
        why = "allow-listed" if allowed else ("MoE and not allow-listed" if arch.is_moe else "dense model")
    elif rule == "default-all":
        v2, why = True, "V2 is the default for every architecture"
    else:
        raise ValueError(f"unknown runner-selection rule {rule!r}")
    return Verdict("cuda", arch.name, V2 if v2 else V1, why)


def cpu_runner(rule: str, arch: Architecture, env_value: str | None, cpu_v2: bool) -> Verdict:
    """The CPU worker builds the V1 CPUModelRunner, unless VLLM_USE_V2_MODEL_RUNNER=1 and the release
    has a CPU Model Runner V2 (which then needs Triton's CPU backend)."""
    if rule != "v1-only" and cpu_v2 and env_choice(env_value):
        return Verdict("cpu", arch.name, V2, f"VLLM_USE_V2_MODEL_RUNNER={env_value} (needs triton-cpu)")
    return Verdict("cpu", arch.name, V1, "the CPU worker builds CPUModelRunner (a V1 GPUModelRunner)")
