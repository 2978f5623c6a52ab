"""ESamp's settings: engine-wide ones from vLLM's `additional_config["esamp"]` (they reach every
engine process), per-request β from `SamplingParams.extra_args["esamp_beta"]`.

    LLM(..., additional_config={"esamp": {"enable": True, "width": 256, "lr": 1e-3,
                                          "sharing": "shared" | "group", "seed": 0}})
    SamplingParams(..., extra_args={"esamp_beta": 0.8})      # absent or 0 = off for that request
"""

from __future__ import annotations

from dataclasses import dataclass, fields

BETA_KEY = "esamp_beta"
SHARING = ("shared", "group")


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

    @classmethod
    def from_vllm_config(cls, vllm_config) -> ESampConfig:
        extra = getattr(vllm_config, "additional_config", None) or {}
        return cls.from_dict(extra.get("esamp") or {})

    @classmethod
    def from_dict(cls, raw: dict) -> ESampConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ESampConfigError(f"additional_config['esamp'] has unknown setting(s) {', '.join(unknown)}; "
                                   f"known: {', '.join(sorted(known))}")
        config = cls(**raw)
        if config.sharing not in SHARING:
            raise ESampConfigError(f"additional_config['esamp']['sharing'] must be one of {SHARING}, "
                                   f"not {config.sharing!r}")
        if int(config.width) < 1 or int(config.gate_steps) < 1 or not float(config.lr) > 0:
            raise ESampConfigError("additional_config['esamp']: width and gate_steps must be >= 1 and lr > 0")
        return config


def beta_of(params) -> float:
    """A request's β (0 when it did not ask for ESamp)."""
    extra = getattr(params, "extra_args", None) or {}
    return float(extra.get(BETA_KEY, 0.0) or 0.0)
