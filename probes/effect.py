"""The effect probe's engine side: does ESamp's distiller predict the deep state it is meant to?

Every sampling step where ESamp acts, the distiller's prediction for each row (made before that
step's update, so out of sample) is compared with the deep tap's rows as the hooks deliver them,
read here independently of ESamp:

    R² = 1 - Σ‖prediction - deep‖² / Σ‖deep - mean(deep)‖²

over the rows ESamp acted on. A distiller fed the wrong layer, or trained on rows misaligned with
their requests, predicts something else than the deep state of the row it fuses: R² falls to
zero or below while every shape probe stays green. Also reported: the same R² for the shallow
rows themselves (the trivial predictor), for comparison. Read by `driftcheck explore --check`.
"""

from __future__ import annotations

from dataclasses import dataclass

from driftcheck.shims.hook_points import HOOKS


@dataclass
class Fidelity:
    rows: int = 0
    sse: object = 0.0  # device scalars once rows arrive, accumulated without a host read
    sse_shallow: object = 0.0
    sum_deep: object = 0.0
    sum_sq_deep: object = 0.0

    def add(self, prediction, shallow, deep) -> None:
        self.sse = self.sse + ((prediction - deep) ** 2).sum()
        self.sse_shallow = self.sse_shallow + ((shallow - deep) ** 2).sum()
        self.sum_deep = self.sum_deep + deep.sum(0)
        self.sum_sq_deep = self.sum_sq_deep + (deep ** 2).sum()
        self.rows += deep.shape[0]

    def to_json(self) -> dict:
        if not self.rows:
            return {"rows": 0, "r2": None, "r2_shallow": None}
        sst = float(self.sum_sq_deep) - float((self.sum_deep ** 2).sum()) / self.rows
        return {"rows": self.rows, "r2": 1 - float(self.sse) / sst if sst > 0 else None,
                "r2_shallow": 1 - float(self.sse_shallow) / sst if sst > 0 else None}


FIDELITY = Fidelity()


def on_sample(logits, view) -> None:
    from esamp import controller

    pending = controller.CONTROLLER.pending if controller.CONTROLLER is not None else None
    if pending is None or pending.view is not view or len(HOOKS.taps) < 2:
        return
    import torch

    layers = sorted(HOOKS.taps)
    acting = torch.nonzero(pending.betas != 0).flatten().to(pending.prediction.device)
    if acting.numel() == 0:
        return
    deep = HOOKS.tapped_rows(layers[-1], view).float().index_select(0, acting)
    shallow = HOOKS.tapped_rows(layers[0], view).float().index_select(0, acting)
    pending.wait()  # the prediction is written on the distiller's stream
    FIDELITY.add(pending.prediction.float().index_select(0, acting), shallow, deep)


_attached = False


def attach() -> None:
    """After ESamp (its `sample` subscriber must run first and leave this step's prediction)."""
    global _attached
    if not _attached:
        HOOKS.subscribe("sample", on_sample)
        HOOKS.subscribe("stats", FIDELITY.to_json, key="effect")
        _attached = True
