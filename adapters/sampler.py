"""What the sampler surfaces produced, normalized: (tokens, processed logprobs or None)."""

from __future__ import annotations

from typing import Any


def tokens_and_logprobs(result: Any) -> tuple[Any, Any]:
    """`Sampler.sample` / top-k-top-p entry results: a tensor (older contracts) or a pair."""
    if isinstance(result, tuple):
        return result[0], result[1] if len(result) > 1 else None
    return result, None


def effective_temperature(temperature):
    """The temperature vLLM divided a random row's logits by. Contracts with `all_random`
    replace a greedy row's ~0 temperature by 1.0; the older one divides by it but then
    takes the greedy token for that row anyway. Either way ESamp leaves greedy rows alone."""
    import torch

    eps = 1e-5
    return torch.where(temperature < eps, torch.ones_like(temperature), temperature)
