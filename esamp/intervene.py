"""Where ESamp changes the logits: the post-filter hook. Over the candidates vLLM's
top-k/top-p/min-p kept, `(1+β)·logits_ref − β·logits_dist` (esamp/fused.py), with
logits_dist = LM head(final norm(the distiller's prediction)); vLLM's own draw follows."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from driftcheck.adapters.model import logits_from_normed
from esamp.counters import CANDIDATES_EVERY, ESampCounters


@dataclass
class Pending:
    """What on_sample prepared for this step's post-filter hook."""

    prediction: Any  # [rows, hidden] fp32, the distiller's prediction of the deep state
    betas: Any  # [rows] host tensor, 0 where ESamp does not act
    view: Any  # the step it belongs to
    normed: Any = None  # the model's final norm of the prediction, in the LM head's dtype
    ready: Any = None  # esamp.distiller.Step whose stream writes both (None: written already)
    rows: Any = None  # the batch's cached [betas, keys, betas on the device] (esamp/groups.py rows)

    def wait(self) -> None:
        """Make the current stream wait for the prediction (a device wait, never the host's)."""
        if self.ready is not None:
            self.ready.wait()
            self.ready = None


def to_device(values, dtype, device):
    """Host values onto the device without a stream sync: a plain .to("cuda") of pageable
    memory makes PyTorch wait for the whole stream (the forward in flight) first."""
    import torch

    host = values if isinstance(values, torch.Tensor) else torch.tensor(values, dtype=dtype)
    if torch.device(device).type != "cuda":
        return host.to(device=device, dtype=dtype)
    return host.to(dtype).pin_memory().to(device, non_blocking=True)


#: The candidate path gathers at most this many LM-head rows per row; a step whose recent candidate
#: counts come near it takes the dense path (measured each step, read without waiting for the device).
CANDIDATE_CAP = 1024
MIN_CANDIDATE_K = 16
COUNTS_EVERY = 2  # interventions between two copies of the largest candidate count to the host
COUNT_SAMPLES = 64  # steps whose per-row candidate counts are kept for the distribution (median, p90, p99)


class FusedSampler:
    """Fuses the post-filter logits. Two exact paths:

    dense       logits_dist over the whole vocabulary through the model's own `compute_logits`;
    candidates  logits_dist only at the surviving candidates: the top-k of the filtered logits
                (k = the next power of two above twice the largest recent candidate count), the
                LM-head rows gathered there (adapters.model.candidate_logits). A row with more
                candidates than k this step (counted, never silently wrong) is left as vLLM filtered it.

    The path is chosen on the host from the candidate counts of steps the device has finished,
    so no step waits for the device; the first steps, and models whose logits are not a plain
    LM head, take the dense path.
    """

    def __init__(self, counters: ESampCounters) -> None:
        self.counters = counters
        self.candidates_total = None  # device: surviving candidates over the counted rows
        self.agreement_total = None  # device: counted rows where argmax logits_dist == argmax logits_ref
        self.overflow_total = None  # device: rows the candidate path left alone (more candidates than k)
        self.kernel_overflow = None  # device int32 [1]: the same, counted by the fuse kernel
        self.count_copies = deque()  # (pinned host copy of a step's largest candidate count, ready event)
        self.recent_max: int | None = None
        self.count_samples: list = []  # device tensors: per-row candidate counts of sampled steps
        self.lockstep = False  # tensor-parallel ranks: the path choice must not depend on timing

    def reset_counts(self) -> None:
        self.candidates_total = self.agreement_total = self.overflow_total = self.kernel_overflow = None
        self.count_samples = []

    def _path_k(self) -> int | None:
        """k for the candidate path, or None for the dense path, from finished steps' counts.

        Under tensor parallelism (`lockstep`) every rank must choose the same path each step (the paths
        enter different collectives), so every earlier step's count is read, waiting if need be: they
        were recorded before that step's draw, which vLLM waited for, so in practice nothing waits."""
        while self.count_copies and (self.count_copies[0][1] is None or self.lockstep
                                     or self.count_copies[0][1].query()):
            host, ready = self.count_copies.popleft()
            if ready is not None and self.lockstep:
                ready.synchronize()
            self.recent_max = int(host)
        if self.recent_max is None:
            return None
        k = max(MIN_CANDIDATE_K, 1 << (2 * max(self.recent_max, 1) - 1).bit_length())
        return k if k <= CANDIDATE_CAP else None

    def _record_counts(self, counts) -> None:
        import torch

        top = counts.max().to(torch.int64)
        if top.device.type == "cuda":
            host = torch.empty((), dtype=torch.int64, pin_memory=True)
            host.copy_(top, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record()
            self.count_copies.append((host, ready))
        else:
            self.count_copies.append((top, None))

    def fuse(self, pending: Pending, batch):
        """The fused logits for the filtered batch, or None when there is nothing to fuse."""
        import torch

        from driftcheck.adapters.model import candidate_logits, lm_head_shard, plain_lm_head, sharded_candidate_logits
        from esamp import kernels
        from esamp.fused import fused_at, fused_logits

        temperature = batch.sampling.temperature if batch.sampling is not None else None
        if temperature is None:
            return None
        model = pending.view.runner.get_model()
        ref = batch.logits
        betas = pending.betas
        if pending.rows is not None and pending.rows[2] is not None and pending.rows[2].device == ref.device:
            beta_dev = pending.rows[2]  # the same batch as the last step: β is on the device already
        else:
            beta_dev = to_device(betas, torch.float32, ref.device)
            if pending.rows is not None:
                pending.rows[2] = beta_dev
        temperature = temperature.to(ref.device)
        c = self.counters
        k = self._path_k()  # from earlier steps' counts: this step's are not waited for
        weight = plain_lm_head(model) if k is not None else None
        shard = lm_head_shard(model) if k is not None and weight is None else None  # tensor parallel
        if shard is not None:
            weight = shard[0]
        counted = (c.intervention_calls + 1) % CANDIDATES_EVERY == 1  # this step's rows are counted
        agree = None
        pending.wait()  # the distiller's forward, on its own stream
        normed = pending.normed
        if normed is None:
            normed = model.model.norm(pending.prediction.to(weight_dtype(model)))
        with torch.no_grad():
            if weight is None:  # dense
                c.dense_steps += 1
                counts = torch.isfinite(ref).sum(dim=-1)  # per row, on the device
                dist = logits_from_normed(model, normed)[:, : ref.shape[1]]
                out = fused_logits(ref, dist, beta_dev, temperature,
                                   any_beta_at_most_minus_one=bool((betas <= -1).any()))
                if counted:
                    agree = dist.masked_fill(~torch.isfinite(ref), float("-inf")).argmax(-1) == ref.argmax(-1)
            else:  # candidates; in place: the filtered logits are vLLM's scratch (apply_top_k_top_p fills
                # them in place too), handed to nothing but this hook and the draw that follows it
                c.candidate_steps += 1
                k = min(k, ref.shape[1])
                normed = normed.to(weight.dtype)
                if shard is None and kernels.fits(ref, weight):  # CUDA: one pass collects, one kernel fuses
                    c.kernel_steps += 1
                    idx, values, counts = kernels.collect_candidates(ref, k)
                    if self.kernel_overflow is None:
                        self.kernel_overflow = torch.zeros(1, dtype=torch.int32, device=ref.device)
                    dist = kernels.fuse_candidates(ref, idx, counts, weight, normed, beta_dev, temperature,
                                                   self.kernel_overflow)
                    out = ref
                    if counted:
                        live = kernels.live(counts, k)
                        covered = counts <= k
                else:
                    # one column more than gathered: a finite value there means the row has more than k
                    # candidates. Counts from the top-k+1 alone: exact up to k, k+1 = more.
                    values, idx = torch.topk(ref, min(k + 1, ref.shape[1]), dim=-1)
                    counts = torch.isfinite(values).sum(dim=-1)
                    covered = counts <= k
                    values, idx = values[:, :k], idx[:, :k]
                    dist = (candidate_logits(model, normed, weight, idx) if shard is None
                            else sharded_candidate_logits(normed, shard, idx))
                    acting = torch.where(covered, beta_dev, torch.zeros_like(beta_dev))
                    out = ref.scatter_(1, idx, fused_at(values, dist, acting, temperature))
                    over = (~covered & (beta_dev != 0)).sum()
                    self.overflow_total = over if self.overflow_total is None else self.overflow_total + over
                    live = torch.isfinite(values)
                if counted:  # logits_dist's best candidate is logits_ref's best one
                    best = dist.masked_fill(~live, float("-inf")).argmax(-1)
                    agree = (best == values.masked_fill(~live, float("-inf")).argmax(-1)) & covered
            if c.intervention_calls % COUNTS_EVERY == 0:  # the path choice reads these (a copy to the host each)
                self._record_counts(counts)
        c.intervention_calls += 1
        active_host = betas != 0
        acting_rows = int(active_host.sum())
        if counted:
            active = beta_dev != 0
            candidates = torch.where(active, counts, torch.zeros_like(counts)).sum()
            self.candidates_total = candidates if self.candidates_total is None else self.candidates_total + candidates
            hits = (agree & active).sum()
            self.agreement_total = hits if self.agreement_total is None else self.agreement_total + hits
            c.rows_counted += acting_rows
            if len(self.count_samples) < COUNT_SAMPLES:  # masked when read: a device mask here would sync
                self.count_samples.append((counts, active_host))
        c.rows_intervened += acting_rows
        return out

    def read_candidates(self) -> None:
        """Fold the device-side counts into the counters (waits for the device: stats() only)."""
        import torch

        c = self.counters
        if self.candidates_total is not None:
            c.candidates_sum = int(self.candidates_total)
        if self.overflow_total is not None or self.kernel_overflow is not None:
            c.rows_overflowed = sum(int(t.sum()) for t in (self.overflow_total, self.kernel_overflow) if t is not None)
        if self.agreement_total is not None:
            c.agreement_hits = int(self.agreement_total)
        if self.count_samples:
            all_counts = torch.cat([counts.cpu()[mask] for counts, mask in self.count_samples]).float()
            if all_counts.numel():
                q = torch.quantile(all_counts, torch.tensor([0.5, 0.9, 0.99]))
                c.candidates_quantiles = {"median": float(q[0]), "p90": float(q[1]), "p99": float(q[2]),
                                          "rows": int(all_counts.numel())}


def weight_dtype(model):
    return next(model.parameters()).dtype
