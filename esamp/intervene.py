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
    rows: Any = None  # the batch's cached esamp.groups.BatchRows (None: this step's rows are a subset)

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
    candidates  logits_dist only at the surviving candidates (k = the next power of two above twice the
                largest recent candidate count), the LM-head rows gathered there. On CUDA a
                `kernels.CandidatePass` per (row bucket, k, spill): Triton kernels, captured as one CUDA
                graph once warm, that also count the candidates, the agreement and the largest count on
                the device; elsewhere PyTorch (the top-k of the filtered logits,
                adapters.model.candidate_logits). A row with more candidates than k this step (counted,
                never silently wrong) is left as vLLM filtered it.
    spill       (CUDA kernels, when recent counts pass CANDIDATE_CAP / 2) the candidate pass at k = CANDIDATE_CAP,
                and the kernels.SPILL_ROWS widest rows past it through the dense head: a near-flat row (a
                reasoning model's open step) costs one read of the LM head instead of the whole batch going
                dense (an eager full-vocabulary head and fused logits over every row).

    The path is chosen on the host from the candidate counts of steps the device has finished,
    so no step waits for the device; the first steps, and models whose logits are not a plain
    LM head, take the dense path.
    """

    def __init__(self, counters: ESampCounters) -> None:
        self.counters = counters
        self.candidates_total = None  # device: surviving candidates over the counted rows
        self.agreement_total = None  # device: counted rows where argmax logits_dist == argmax logits_ref
        self.overflow_total = None  # device: rows the candidate path left alone (more candidates than k)
        self.totals = None  # device int64 [3]: the candidate kernels' counts (esamp/kernels.py T_*)
        self.passes: dict = {}  # (row bucket, k, vocab, LM head) -> kernels.CandidatePass
        self.graphs = True  # capture the candidate passes (ESampConfig.cuda_graphs)
        self.count_copies = deque()  # (pinned host copy of a step's largest candidate count, ready event)
        self.recent_max: int | None = None
        self.count_samples: list = []  # device tensors: per-row candidate counts of sampled steps
        self.lockstep = False  # tensor-parallel ranks: the path choice must not depend on timing
        self._heads = None  # (model, its plain LM-head weight, its tensor-parallel shard): `_head`

    def reset_counts(self) -> None:
        self.candidates_total = self.agreement_total = self.overflow_total = None
        if self.totals is not None:
            self.totals.zero_()
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

    def _head(self, model):
        """(plain LM-head weight, None), (None, tensor-parallel shard) or (None, None) for the dense path
        (adapters.model plain_lm_head, lm_head_shard), looked up once per model: every step asks."""
        from driftcheck.adapters.model import lm_head_shard, plain_lm_head

        if self._heads is None or self._heads[0] is not model:
            weight = plain_lm_head(model)
            self._heads = (model, weight, lm_head_shard(model) if weight is None else None)
        return self._heads[1:]

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

        from driftcheck.adapters.model import candidate_logits, sharded_candidate_logits
        from esamp import kernels
        from esamp.fused import fused_at, fused_logits

        temperature = batch.sampling.temperature if batch.sampling is not None else None
        if temperature is None:
            return None
        model = pending.view.runner.get_model()
        ref = batch.logits
        rows = pending.rows
        if rows is not None and rows.beta_dev is not None and rows.beta_dev.device == ref.device:
            beta_dev = rows.beta_dev  # the same batch as the last step: β is on the device already
        else:
            beta_dev = to_device(pending.betas, torch.float32, ref.device)
            if rows is not None:
                rows.beta_dev = beta_dev
        acting_rows = rows.acting if rows is not None else int((pending.betas != 0).sum())
        if temperature.device != ref.device:
            temperature = temperature.to(ref.device)
        c = self.counters
        k = self._path_k()  # from earlier steps' counts: this step's are not waited for
        weight, shard = self._head(model) if self.recent_max is not None else (None, None)  # None: the first steps
        spill = k is None and weight is not None and shard is None and kernels.fits(ref, weight)
        if spill:  # rows past the cap lately: the kernels at the cap, the widest rows through the dense head
            k = CANDIDATE_CAP
        elif k is None:
            weight = shard = None  # dense
        if shard is not None:  # tensor parallel
            weight = shard[0]
        counted = (c.intervention_calls + 1) % CANDIDATES_EVERY == 1  # this step's rows are counted
        agree = None
        pending.wait()  # the distiller's forward, on its own stream
        normed = pending.normed
        if normed is None:
            normed = model.model.norm(pending.prediction.to(weight_dtype(model)))
        with torch.no_grad():
            if weight is not None and shard is None and kernels.fits(ref, weight):
                # CUDA: one pass collects, fuses and counts on the device (CandidatePass)
                c.candidate_steps += 1
                c.kernel_steps += 1
                c.spill_steps += spill
                out = self._candidate_pass(ref, min(k, ref.shape[1]), weight, normed, beta_dev, temperature,
                                           counted, pending.betas != 0 if rows is None else rows.active,
                                           kernels.SPILL_ROWS if spill else 0)
                c.intervention_calls += 1
                c.rows_intervened += acting_rows
                c.rows_counted += acting_rows  # the kernels count every step's rows
                return out
            if weight is None:  # dense
                c.dense_steps += 1
                counts = torch.isfinite(ref).sum(dim=-1)  # per row, on the device
                dist = logits_from_normed(model, normed)[:, : ref.shape[1]]
                out = fused_logits(ref, dist, beta_dev, temperature,
                                   any_beta_at_most_minus_one=bool((pending.betas <= -1).any()))
                if counted:
                    agree = dist.masked_fill(~torch.isfinite(ref), float("-inf")).argmax(-1) == ref.argmax(-1)
            else:  # candidates in PyTorch; in place: the filtered logits are vLLM's scratch (apply_top_k_top_p
                # fills them in place too), handed to nothing but this hook and the draw that follows it
                c.candidate_steps += 1
                k = min(k, ref.shape[1])
                normed = normed.to(weight.dtype)
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
        active_host = pending.betas != 0
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

    def _candidate_pass(self, ref, k, weight, normed, beta_dev, temperature, sampled, active_host, spill):
        """This step through the CandidatePass of its row bucket, k and spill (built, and captured, on first use):
        on the host, one parameter copy and one replay; its largest count copied to the host every
        COUNTS_EVERY interventions for the path choice, its counts kept for the distribution when `sampled`."""
        import torch

        from esamp import kernels
        from esamp.distiller import bucket_of

        n = ref.shape[0]
        key = (bucket_of(n), k, ref.shape[1], weight.data_ptr(), spill)
        cp = self.passes.get(key)
        if cp is None:
            with torch.inference_mode(False):  # normal tensors: reset_counts zeroes them outside vLLM's mode
                if self.totals is None:  # the first pass: every candidate kernel compiled now, not mid-run
                    kernels.warm_kernels(weight, ref.shape[1])
                    self.totals = kernels.new_totals(ref.device)
                cp = self.passes[key] = kernels.CandidatePass(key[0], k, ref.shape[1], weight, self.totals,
                                                              graphs=self.graphs, spill=spill)
            on_cuda = ref.device.type == "cuda"  # else Triton's interpreter (the kernel check on the CPU)
            cp.top_host = torch.zeros(1, dtype=torch.int32, pin_memory=on_cuda)
            cp.top_ready = torch.cuda.Event() if on_cuda else None
        # the kernels' layouts, converted only where they differ (each conversion is a call into torch)
        if temperature.dtype != torch.float32 or not temperature.is_contiguous():
            temperature = temperature.float().contiguous()
        if normed.dtype != weight.dtype or not normed.is_contiguous():
            normed = normed.to(weight.dtype).contiguous()
        cp.run(ref, beta_dev, temperature, normed)
        if self.counters.intervention_calls % COUNTS_EVERY == 0:
            # one host slot and event per pass, written again by its next copy: an entry read late reads
            # that newer count, and its event answers for the newer copy
            cp.top_host.copy_(cp.top, non_blocking=True)
            if cp.top_ready is not None:
                cp.top_ready.record()
            self.count_copies.append((cp.top_host, cp.top_ready))
        if sampled and len(self.count_samples) < COUNT_SAMPLES:
            self.count_samples.append((cp.counts[:n].clone(), active_host))
        if cp.graph_error is not None and self.counters.graph_error is None:
            self.counters.graph_error = f"candidate pass: {cp.graph_error}"
        return ref

    def read_candidates(self) -> None:
        """Fold the device-side counts into the counters (waits for the device: stats() only)."""
        import torch

        c = self.counters
        from esamp import kernels

        kt = [int(v) for v in self.totals.cpu()] if self.totals is not None else [0, 0, 0]
        # the kernels' totals (every step) and the PyTorch paths' (every CANDIDATES_EVERY-th step)
        c.candidates_sum = kt[kernels.T_CANDIDATES] + _int(self.candidates_total)
        c.rows_overflowed = kt[kernels.T_OVERFLOW] + _int(self.overflow_total)
        c.agreement_hits = kt[kernels.T_AGREE] + _int(self.agreement_total)
        if self.count_samples:
            all_counts = torch.cat([counts.cpu()[mask] for counts, mask in self.count_samples]).float()
            if all_counts.numel():
                q = torch.quantile(all_counts, torch.tensor([0.5, 0.9, 0.99]))
                c.candidates_quantiles = {"median": float(q[0]), "p90": float(q[1]), "p99": float(q[2]),
                                          "rows": int(all_counts.numel())}


def _int(total) -> int:
    return int(total) if total is not None else 0


def weight_dtype(model):
    return next(model.parameters()).dtype
