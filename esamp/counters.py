"""What ESamp did, counted in the process where it runs (`stats()` of the controller)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

LOSS_EVERY = 5  # train steps between two loss-history points
CANDIDATES_EVERY = 8  # interventions between two candidate counts (a pass over the logits, so sampled)


@dataclass
class ESampCounters:
    enabled: bool = False
    gate_steps: int = 0
    gate_passed: bool = False
    train_steps: int = 0
    rows_trained: int = 0
    loss_last: float | None = None
    loss_sum: float = 0.0
    loss_history: list = field(default_factory=list)  # (train step, loss), every LOSS_EVERY steps
    intervention_calls: int = 0
    rows_intervened: int = 0
    candidates_sum: int = 0  # over the rows of every CANDIDATES_EVERY-th intervention
    rows_counted: int = 0  # the rows those counts cover
    groups_live: int = 0
    groups_reset: int = 0
    dense_steps: int = 0  # interventions that computed logits_dist over the whole vocabulary
    candidate_steps: int = 0  # interventions that computed it at the candidates only
    kernel_steps: int = 0  # of those, the ones the Triton kernels ran (esamp/kernels.py; CUDA)
    spill_steps: int = 0  # of those, the ones whose widest rows past the cap went through the dense head
    rows_overflowed: int = 0  # rows the candidate path left alone (more candidates than it gathered)
    candidates_quantiles: dict = field(default_factory=dict)  # per-row candidate counts: median, p90, p99
    graph_steps: int = 0  # distiller steps that ran as captured CUDA graphs (esamp/distiller.py StepGraphs)
    # defer_update: updates queued once the sampler had queued its draw, and those the draw's hook (`sampled`)
    # never came for, queued before the next step or a read instead
    updates_after_draw: int = 0
    updates_late: int = 0
    graph_error: str | None = None  # why capturing failed, if it did (those steps then ran eagerly)
    # how the distiller's step computed the model's final norm of its prediction: "kernel" (in its last forward
    # kernel, after matching the model's own module on a real step), or "module: <why>" (esamp/distiller.py)
    distiller_norm: str | None = None
    agreement_hits: int = 0  # counted rows where logits_dist's best candidate is logits_ref's best one
    # host seconds inside ESamp's hooks, by range (shims/hook_points.py `timed`; no profiler): the sample
    # hook "esamp.sample_hook" (gate, tap rows, and "esamp.distill", the distiller step's launch, inside
    # it) and the post-filter hook "esamp.fuse"; the device work they queue is not in it
    host_s: dict = field(default_factory=dict)
    host_steps: int = 0  # sample-hook calls those seconds cover

    @property
    def loss_mean(self) -> float | None:
        return self.loss_sum / self.train_steps if self.train_steps else None

    def record_losses(self, steps: int, rows: int, loss_sum: float, last: float, history: bool) -> None:
        """`steps` training steps read, over `rows` rows, whose losses sum to `loss_sum`, the last of them
        `last`; `history`: the last one is a history point (esamp/training.py picks them every LOSS_EVERY)."""
        self.train_steps += steps
        self.rows_trained += rows
        self.loss_last = last
        self.loss_sum += loss_sum
        if history:
            self.loss_history.append((self.train_steps, last))

    def to_json(self) -> dict:
        out = asdict(self)
        out["loss_mean"] = self.loss_mean
        out["candidates_per_row"] = self.candidates_sum / self.rows_counted if self.rows_counted else None
        # how often the distiller's prediction, through the model's own norm and LM head, picks the
        # model's own most likely candidate: what ESamp steers away from is what the model would do
        out["dist_top1_agreement"] = self.agreement_hits / self.rows_counted if self.rows_counted else None
        return out
