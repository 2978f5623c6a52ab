"""The fused-logit intervention, as a pure function (tested against a plain reference).

ESamp samples from (1+β)·logits_ref − β·logits_dist over the candidates that
vLLM's top-k/top-p/min-p filtering kept. `logits_ref` arrives here already
divided by the row's temperature and filtered (-inf outside the candidates);
`logits_dist` (the LM head applied to the final norm of the distiller's
prediction) is divided by the same temperature, so β trades the two on the
same scale. Filtered-out tokens stay impossible; greedy rows and β=0 rows are
returned unchanged, bit for bit.
"""

from __future__ import annotations

import torch

from driftcheck.adapters.sampler import SAMPLING_EPS, effective_temperature


def fused_logits(ref: torch.Tensor, dist: torch.Tensor, beta: torch.Tensor, temperature: torch.Tensor, *,
                 any_beta_at_most_minus_one: bool = False) -> torch.Tensor:
    """ref, dist: [rows, vocab]; beta, temperature: [rows] on ref's device. Returns a new [rows, vocab] tensor.

    Two passes over the logits, no host sync: for β > -1, (1+β)·(-inf) - finite stays -inf, so
    filtered-out tokens need no mask; a row with β=0 (or greedy, where β is zeroed) is
    ref·1 + dist·(-0) = ref exactly. Only β <= -1 (the caller knows, from the host-side
    values) needs the explicit mask.
    """
    t = effective_temperature(temperature).to(ref.dtype)
    b = torch.where(temperature >= SAMPLING_EPS, beta.to(ref.dtype), torch.zeros_like(t))
    out = torch.addcmul(ref * (1 + b).unsqueeze(1), dist.to(ref.dtype), (-b / t).unsqueeze(1))
    if any_beta_at_most_minus_one:
        out = torch.where(torch.isfinite(ref), out, ref)
    return out


def fused_at(values: torch.Tensor, dist: torch.Tensor, beta: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """The same formula at gathered candidates: values [rows, k] are logits_ref at the candidates
    (-inf where a row has fewer than k), dist [rows, k] logits_dist there. Filtered-out entries stay
    -inf; β = 0 and greedy rows come back unchanged."""
    keep, scale = fused_coefficients(beta, temperature, values.dtype)
    out = torch.addcmul(values * keep.unsqueeze(1), dist.to(values.dtype), scale.unsqueeze(1))
    return torch.where(torch.isfinite(values), out, values)


def fused_coefficients(beta: torch.Tensor, temperature: torch.Tensor, dtype=torch.float32):
    """Per row, (1+β, −β/T): fused = (1+β)·ref + (−β/T)·dist, with β zeroed on greedy rows (so those
    and β = 0 rows come back unchanged). The candidate kernels (esamp/kernels.py) take these."""
    t = effective_temperature(temperature).to(dtype)
    b = torch.where(temperature >= SAMPLING_EPS, beta.to(dtype), torch.zeros_like(t))
    return 1 + b, -b / t
