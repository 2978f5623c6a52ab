"""The model's own final norm and LM head, across `compute_logits` contracts."""

from __future__ import annotations


def logits_from_hidden(model, hidden):
    """Logits for residual-stream rows: LM head(final norm(hidden)), as the model computes them.

    Newer releases take `compute_logits(hidden_states)`; older ones also take the
    sampling metadata (unused for plain logits).
    """
    normed = model.model.norm(hidden)
    try:
        return model.compute_logits(normed)
    except TypeError:
        return model.compute_logits(normed, None)


def reproduction_error(model, deep_rows, logits) -> float | None:
    """max |LM head(final norm(deep rows)) - logits| over the shared vocabulary width: how far the
    deep tap's rows are from the rows the sampler received (None: the row counts differ, so the
    tap did not read this step's rows at all). The recording probe and ESamp's gate both ask."""
    import torch

    with torch.no_grad():
        recomputed = logits_from_hidden(model, deep_rows).float()
    if recomputed.shape[0] != logits.shape[0]:
        return None
    width = min(recomputed.shape[-1], logits.shape[-1])
    return float((recomputed[:, :width] - logits[:, :width].float()).abs().max())
