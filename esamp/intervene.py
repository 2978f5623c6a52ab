"""Where ESamp changes the logits: the post-filter hook. Over the candidates vLLM's
top-k/top-p/min-p kept, `(1+β)·logits_ref − β·logits_dist` (esamp/fused.py), with
logits_dist = LM head(final norm(the distiller's prediction)); vLLM's own draw follows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from driftcheck.adapters.model import logits_from_hidden
from esamp.counters import CANDIDATES_EVERY, ESampCounters


@dataclass
class Pending:
    """What on_sample prepared for this step's post-filter hook."""

    prediction: Any  # [rows, hidden] fp32, the distiller's prediction of the deep state
    betas: Any  # [rows] host tensor, 0 where ESamp does not act
    view: Any  # the step it belongs to


def to_device(values, dtype, device):
    """Host values onto the device without a stream sync: a plain .to("cuda") of pageable
    memory makes PyTorch wait for the whole stream (the forward in flight) first."""
    import torch

    host = values if isinstance(values, torch.Tensor) else torch.tensor(values, dtype=dtype)
    if torch.device(device).type != "cuda":
        return host.to(device=device, dtype=dtype)
    return host.to(dtype).pin_memory().to(device, non_blocking=True)


class FusedSampler:
    def __init__(self, counters: ESampCounters) -> None:
        self.counters = counters
        self.candidates_total = None  # device tensor: surviving candidates over the counted rows

    def fuse(self, pending: Pending, batch):
        """The fused logits for the filtered batch, or None when there is nothing to fuse."""
        import torch

        from esamp.fused import fused_logits

        temperature = batch.sampling.temperature if batch.sampling is not None else None
        if temperature is None:
            return None
        model = pending.view.runner.get_model()
        ref = batch.logits
        with torch.no_grad():
            dist = logits_from_hidden(model, pending.prediction.to(next(model.parameters()).dtype))[:, : ref.shape[1]]
        betas = pending.betas
        beta_dev = to_device(betas, torch.float32, ref.device)
        out = fused_logits(ref, dist, beta_dev, temperature.to(ref.device),
                           any_beta_at_most_minus_one=bool((betas <= -1).any()))
        c = self.counters
        c.intervention_calls += 1
        acting = int((betas != 0).sum())
        if c.intervention_calls % CANDIDATES_EVERY == 1:
            candidates = (torch.isfinite(ref) & (beta_dev != 0).unsqueeze(1)).sum()  # counted on the device
            self.candidates_total = candidates if self.candidates_total is None else self.candidates_total + candidates
            c.rows_counted += acting
        c.rows_intervened += acting
        return out

    def read_candidates(self) -> None:
        if self.candidates_total is not None:
            self.counters.candidates_sum = int(self.candidates_total)
