"""What the sampler surfaces hand over, normalized across contracts."""

from __future__ import annotations

SAMPLING_EPS = 1e-5  # vLLM's threshold below which a row is greedy


def effective_temperature(temperature):
    """The temperature vLLM divided a random row's logits by. Contracts with `all_random`
    replace a greedy row's ~0 temperature by 1.0; the older one divides by it but then
    takes the greedy token for that row anyway. Either way ESamp leaves greedy rows alone."""
    import torch

    return torch.where(temperature < SAMPLING_EPS, torch.ones_like(temperature), temperature)
