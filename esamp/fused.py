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


def fused_logits(ref: torch.Tensor, dist: torch.Tensor, beta: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """ref, dist: [rows, vocab]; beta, temperature: [rows]. Returns a new [rows, vocab] tensor."""
    # No early exit on "no active row": deciding it would read the device (a host sync);
    # the caller already skips steps whose β are all 0.
    active = (beta != 0) & (temperature >= SAMPLING_EPS)
    t = effective_temperature(temperature).to(ref.dtype)
    b = beta.to(ref.dtype).unsqueeze(1)
    scaled = dist.to(ref.dtype) / t.unsqueeze(1)
    mixed = (1 + b) * ref - b * scaled
    candidate = torch.isfinite(ref)
    mixed = torch.where(candidate, mixed, torch.full_like(ref, float("-inf")))
    return torch.where(active.unsqueeze(1), mixed, ref)
