"""The gate: for the first decoding steps ESamp only checks its hooks, and it never trains or
samples on hooks it has not verified. A failure stops the run naming the surface."""

from __future__ import annotations

from driftcheck.adapters.model import reproduction_error

GATE_TOLERANCE = 1e-2  # |LM head(norm(deep tap)) - sampler logits|, fp32/bf16 rounding allowance


class ESampGateFailed(RuntimeError):
    """A hook ESamp relies on does not deliver (the message names the surface)."""


class Gate:
    def __init__(self, steps: int) -> None:
        self.steps = steps  # decoding steps to check
        self.checked = 0
        self.passed = False

    def check(self, logits, view, fired: list[bool], shallow, deep) -> None:
        """One step: every tap wrote, the taps read exactly the live rows, and the deep tap
        reproduces the sampler's logits through the model's own norm and LM head."""
        if not view.decode_rows:
            return
        n = len(view.req_ids)
        self.checked += 1
        if not all(fired):
            raise ESampGateFailed("ESamp gate: a tap did not write this step (surface model.*.decoder_layer); "
                                  "the distiller would train on stale rows")
        if shallow.shape[0] != n or deep.shape[0] != n:
            raise ESampGateFailed(f"ESamp gate: the tap read {deep.shape[0]} rows for {n} live requests "
                                  "(surface runner.prepare_inputs)")
        err = reproduction_error(view.runner.get_model(), deep, logits)
        scale = max(1.0, float(logits.abs().max()))
        if err is None or err > GATE_TOLERANCE * scale:
            raise ESampGateFailed(f"ESamp gate: deep tap rows do not reproduce the sampler's logits "
                                  f"(max |Δ| {err if err is None else format(err, '.3g')}; surfaces "
                                  "runner.prepare_inputs / model.*.final_norm)")
        if self.checked >= self.steps:
            self.passed = True
