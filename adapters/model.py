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
