"""The candidate path on CUDA in Triton kernels, instead of ~30 PyTorch launches and a top-k
over the whole vocabulary (the largest cost measured on the H200: aten::topk ~0.6 ms per step
on [256, 152k] logits).

collect, fuse,  `CandidatePass` (below): per step, the surviving candidates of each row, then the fused
tally, spill    logits at them, with the counts ESamp reports summed on the device, and on steps with near-flat
                rows the widest of them through the dense head; all read the step's tensors' addresses from a
                `Params` block, so one CUDA graph of them serves every step.

The distiller step's kernels are in esamp/step_kernels.py.

`available()` says whether they can run (CUDA tensors and Triton importable); the PyTorch path in
esamp/intervene.py is the reference they are tested against (tests/test_esamp_kernels.py, which
runs them in Triton's interpreter on the CPU where no GPU is present).
"""

from __future__ import annotations

import functools
import os

_TRITON = None


def _triton():
    global _TRITON
    if _TRITON is None:
        try:
            import triton
            import triton.language as tl

            _TRITON = (triton, tl)
        except ImportError:
            _TRITON = False
    return _TRITON


def available(tensor) -> bool:
    """Whether the kernels can run on this tensor: CUDA (or Triton's interpreter) and Triton importable."""
    if os.environ.get("ESAMP_TRITON", "1") == "0":
        return False
    interpreted = os.environ.get("TRITON_INTERPRET") == "1"
    return (tensor.device.type == "cuda" or interpreted) and bool(_triton())


def available_on(device) -> bool:
    """`available` for tensors on this device."""
    import torch

    return available(torch.empty(0, device=device))


def fits(ref, weight) -> bool:
    """The kernels' layout: fp32 logits and an LM head whose rows are contiguous."""
    return available(ref) and ref.dtype.is_floating_point and ref.dtype.itemsize == 4 and ref.stride(1) == 1 \
        and weight.stride(1) == 1


#: The candidate kernels read their per-step inputs from an int64 block on the device (`Params`), so the
#: same launches (and a CUDA graph of them: esamp/intervene.py CandidatePass) serve every step, whatever
#: address vLLM's logits, β and temperatures have that step. Offsets:
C_ROWS, C_REF, C_REF_STRIDE, C_BETA, C_TEMP, C_NORMED = range(6)
C_SIZE = 8
#: `totals` (int64 [3], on the device, summed over steps): candidates of acting rows, acting rows where
#: logits_dist's best candidate is logits_ref's best one, acting rows left alone (more candidates than k)
T_CANDIDATES, T_AGREE, T_OVERFLOW = range(3)


@functools.cache  # compiled lazily, once per process: Triton is imported only where the kernels run
def _kernels():
    triton, tl = _triton()

    @triton.jit
    def collect(params_ptr, vocab, idx_ptr, val_ptr, count_ptr, K, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        if row < tl.load(params_ptr + 0):  # C_ROWS: programs past this step's rows (a padded bucket) stop
            ref_ptr = tl.load(params_ptr + 1).to(val_ptr.dtype)  # C_REF (fp32, as the values)
            ref_stride = tl.load(params_ptr + 2)
            block = tl.program_id(1)
            cols = block * BLOCK + tl.arange(0, BLOCK)
            inside = cols < vocab
            vals = tl.load(ref_ptr + row.to(tl.int64) * ref_stride + cols, mask=inside, other=float("-inf"))
            finite = inside & (vals > float("-inf")) & (vals < float("inf"))
            flag = finite.to(tl.int32)
            total = tl.sum(flag, axis=0)
            if total > 0:  # after top-p most blocks hold no candidate: they stop after one read
                base = tl.atomic_add(count_ptr + row, total)  # where this block's candidates start in the row
                pos = base + tl.cumsum(flag, axis=0) - flag
                keep = finite & (pos < K)
                tl.store(idx_ptr + row * K + pos, cols.to(tl.int64), mask=keep)
                tl.store(val_ptr + row * K + pos, vals, mask=keep)

    @triton.jit
    def fuse(params_ptr, idx_ptr, count_ptr, w_ptr, w_stride, hidden, dist_ptr, STRIDE, EPS: tl.constexpr,
             K, BLOCK_K: tl.constexpr, BLOCK_H: tl.constexpr):
        # program (row, p) takes the row's candidates from p·BLOCK_K on, BLOCK_K at a time, STRIDE apart
        # (STRIDE = the row's programs × BLOCK_K: one block each where there are ⌈K / BLOCK_K⌉ programs a row,
        # several where fewer: `_fuse` programs), each dot product over the hidden size in as few tiles as
        # BLOCK_H allows (the steps of a program are back to back: few programs of many tiles wait on their
        # loads one after the other); programs past a row's count stop at once
        row = tl.program_id(0)
        start = tl.program_id(1) * BLOCK_K
        if row < tl.load(params_ptr + 0):
            n = tl.load(count_ptr + row)
            if (n <= K) & (start < n):
                ref_ptr = tl.load(params_ptr + 1).to(dist_ptr.dtype)  # fp32
                ref_stride = tl.load(params_ptr + 2)
                beta_ptr = tl.load(params_ptr + 3).to(dist_ptr.dtype)  # fp32 [rows]
                temp_ptr = tl.load(params_ptr + 4).to(dist_ptr.dtype)  # fp32 [rows]
                x_ptr = tl.load(params_ptr + 5).to(w_ptr.dtype)  # [rows, hidden] in the head's dtype
                t = tl.load(temp_ptr + row)
                greedy = t < EPS  # β is zeroed on greedy rows, and vLLM did not divide them (esamp/fused.py)
                b = tl.where(greedy, 0.0, tl.load(beta_ptr + row))
                c1 = 1 + b
                c2 = -b / tl.where(greedy, 1.0, t)
                for first in range(start, n, STRIDE):
                    j = first + tl.arange(0, BLOCK_K)
                    live = j < n
                    idx = tl.load(idx_ptr + row * K + j, mask=live, other=0)
                    acc = tl.zeros([BLOCK_K], dtype=tl.float32)
                    for h0 in range(0, hidden, BLOCK_H):
                        h = h0 + tl.arange(0, BLOCK_H)
                        hm = h < hidden
                        x = tl.load(x_ptr + row * hidden + h, mask=hm, other=0.0)
                        w = tl.load(w_ptr + idx[:, None] * w_stride + h[None, :], mask=live[:, None] & hm[None, :],
                                    other=0.0)
                        acc += tl.sum(w.to(tl.float32) * x.to(tl.float32)[None, :], axis=1)
                    dist = acc.to(w_ptr.dtype.element_ty).to(tl.float32)  # rounded as the dense head rounds
                    tl.store(dist_ptr + row * K + j, dist, mask=live)
                    at = ref_ptr + row.to(tl.int64) * ref_stride + idx
                    ref = tl.load(at, mask=live, other=0.0)
                    tl.store(at, ref * c1 + dist * c2, mask=live)

    @triton.jit
    def tally(params_ptr, count_ptr, val_ptr, dist_ptr, totals_ptr, max_ptr, EPS: tl.constexpr, K,
              BLOCK: tl.constexpr):
        # one program per row, after fuse: the counts into totals (T_*), and the agreement from the row's
        # candidates' values as collected (logits_ref before fusing) and their logits_dist
        row = tl.program_id(0)
        if row < tl.load(params_ptr + 0):
            beta_ptr = tl.load(params_ptr + 3).to(dist_ptr.dtype)
            temp_ptr = tl.load(params_ptr + 4).to(dist_ptr.dtype)
            n = tl.load(count_ptr + row)
            tl.atomic_max(max_ptr, n)  # the step's largest count: the next steps' k (FusedSampler._path_k)
            raw_b = tl.load(beta_ptr + row)
            b = tl.where(tl.load(temp_ptr + row) < EPS, 0.0, raw_b)
            acting = raw_b != 0
            if acting:
                tl.atomic_add(totals_ptr + 0, n.to(tl.int64))  # T_CANDIDATES
            if n > K:
                if b != 0:
                    tl.atomic_add(totals_ptr + 2, 1)  # T_OVERFLOW: an acting row left as vLLM filtered it
            elif acting:
                best_d = tl.full([], float("-inf"), tl.float32)
                best_r = tl.full([], float("-inf"), tl.float32)
                at_d = tl.full([], -1, tl.int32)
                at_r = tl.full([], -1, tl.int32)
                for start in range(0, n, BLOCK):
                    j = start + tl.arange(0, BLOCK)
                    live = j < n
                    # the best candidate of each, first position on ties (as torch's argmax)
                    d = tl.load(dist_ptr + row * K + j, mask=live, other=float("-inf"))
                    r = tl.load(val_ptr + row * K + j, mask=live, other=float("-inf"))
                    bd, br = tl.max(d, axis=0), tl.max(r, axis=0)
                    pd = start + tl.argmax(d, axis=0, tie_break_left=True)
                    pr = start + tl.argmax(r, axis=0, tie_break_left=True)
                    at_d = tl.where(bd > best_d, pd, at_d)
                    at_r = tl.where(br > best_r, pr, at_r)
                    best_d, best_r = tl.maximum(best_d, bd), tl.maximum(best_r, br)
                tl.atomic_add(totals_ptr + 1, ((at_d == at_r) & (n > 0)).to(tl.int64))  # T_AGREE

    @triton.jit
    def spill_in(params_ptr, count_ptr, sel_ptr, x_ptr, refs_ptr, bt_ptr, vocab, hidden, K,
                 BLOCK: tl.constexpr):
        # program (r, block): the r-th widest row's logits (-inf unless it has more than K candidates) and,
        # block 0, its normed prediction (zeros unless so), β and T, into the spill buffers
        r = tl.program_id(0)
        row = tl.load(sel_ptr + r)
        over = (row < tl.load(params_ptr + 0)) & (tl.load(count_ptr + row) > K)
        row = tl.where(over, row, 0)  # a row past this step's (a padded bucket's) is read nowhere
        ref_ptr = tl.load(params_ptr + 1).to(refs_ptr.dtype)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        inside = cols < vocab
        vals = tl.load(ref_ptr + row * tl.load(params_ptr + 2) + cols, mask=inside, other=float("-inf"))
        tl.store(refs_ptr + r.to(tl.int64) * vocab + cols, tl.where(over, vals, float("-inf")), mask=inside)
        if tl.program_id(1) == 0:
            src = tl.load(params_ptr + 5).to(x_ptr.dtype)
            for h0 in range(0, hidden, BLOCK):
                h = h0 + tl.arange(0, BLOCK)
                hm = h < hidden
                x = tl.load(src + row * hidden + h, mask=hm, other=0.0)
                tl.store(x_ptr + r * hidden + h, tl.where(over, x, 0.0), mask=hm)
            beta_ptr = tl.load(params_ptr + 3).to(bt_ptr.dtype)
            temp_ptr = tl.load(params_ptr + 4).to(bt_ptr.dtype)
            tl.store(bt_ptr + 2 * r, tl.where(over, tl.load(beta_ptr + row), 0.0))
            tl.store(bt_ptr + 2 * r + 1, tl.where(over, tl.load(temp_ptr + row), 1.0))

    @triton.jit
    def spill_out(params_ptr, sel_ptr, refs_ptr, sdist_ptr, bt_ptr, vocab, EPS: tl.constexpr, BLOCK: tl.constexpr):
        # program (r, block): the fused logits of the r-th widest row at its candidates, written into vLLM's
        # logits (a row spill_in did not take has β 0 there: left alone)
        r = tl.program_id(0)
        raw_b = tl.load(bt_ptr + 2 * r)
        t = tl.load(bt_ptr + 2 * r + 1)
        greedy = t < EPS
        b = tl.where(greedy, 0.0, raw_b)
        if b != 0:
            row = tl.load(sel_ptr + r)
            ref_ptr = tl.load(params_ptr + 1).to(refs_ptr.dtype)
            cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
            inside = cols < vocab
            vals = tl.load(refs_ptr + r.to(tl.int64) * vocab + cols, mask=inside, other=float("-inf"))
            live = inside & (vals > float("-inf")) & (vals < float("inf"))
            d = tl.load(sdist_ptr + r.to(tl.int64) * vocab + cols, mask=live, other=0.0).to(tl.float32)
            tl.store(ref_ptr + row * tl.load(params_ptr + 2) + cols, vals * (1 + b) + d * (-b / t), mask=live)

    return triton, collect, fuse, tally, spill_in, spill_out


class Params:
    """An int64 block a kernel reads its per-step sizes and addresses from, on the device: each `write` fills
    one of SLOTS pinned host slots and copies it to the block in stream order (no host wait), so a launch (or
    a CUDA graph of launches) made once serves every step. A slot is written again only once its copy has run:
    the writes go in groups of GROUP, an event recorded after each group's last copy (two events in turn), and
    the first write of a group checks the event of the group two before it, whose slots it reuses (`waits`
    counts the times the host had to wait for one: in a decode loop, never, since vLLM waits for each step's
    tokens). Values equal to the last ones written are not copied again: the block holds them (most steps of a
    decode loop keep β's, the temperatures' and the prediction's addresses)."""

    GROUP = 4
    SLOTS = 2 * GROUP

    def __init__(self, size: int, device, index64: bool = True) -> None:
        import torch

        self.device = torch.device(device)
        self.index64 = index64
        self.dev = torch.zeros(size, dtype=torch.int64, device=self.device)
        self.waits = 0
        self.last = None  # the values the block was last given
        self.count = 0  # copies queued
        if self.device.type == "cuda":
            host = torch.zeros(self.SLOTS, size, dtype=torch.int64, pin_memory=True)
            self.slots = [host[i] for i in range(self.SLOTS)]
            self.views = [t.numpy() for t in self.slots]
            self.events = [torch.cuda.Event(), torch.cuda.Event()]  # after groups of even, odd number
        else:  # the CPU (Triton's interpreter): the kernels read the block in program order
            self.slots = None
            self.view = self.dev.numpy()

    def write(self, values: tuple) -> None:
        if values == self.last:  # the block holds them already (only `write` changes it): no copy
            return
        self.last = values
        if self.slots is None:
            self.view[: len(values)] = values
            return
        w = self.count
        self.count += 1
        group, at = divmod(w, self.GROUP)
        if at == 0 and w >= self.SLOTS:  # this group's slots held the writes of group - 2: their copies ran?
            done = self.events[group % 2]
            if not done.query():
                done.synchronize()
                self.waits += 1
        i = w % self.SLOTS
        self.views[i][: len(values)] = values
        self.dev.copy_(self.slots[i], non_blocking=True)
        if at == self.GROUP - 1:
            self.events[group % 2].record()


# the collect's tile and warps, and the fuse's candidate and hidden tiles and warps: driftcheck/bench/kernelcost.py
# times the choices against a read of the same logits (256 rows × 151,936 fp32: tile 1024 at 4 warps reads them at
# 0.97-0.99× a torch.amax over each row on the H200, in two calls, and at 0.91-0.94× on the H100 at 16fe23b, on
# the peaked and mixed cases (reports/gpu/kernelcost-3584.md, the latter); the earlier tile 4096 at 1.44-1.78×. At 7B,
# V1, graphs, two device calls before and after: top_k 20 0.987 → 0.990×, t0.8 0.987 → 0.993×, not an A/B in one
# call; reports/benchmarks.md)
COLLECT_BLOCK = 1024
COLLECT_WARPS = 4
# the fuse: programs of 4 candidates, each dot product in tiles of 1024 hidden columns. Timed alone by kernelcost
# on the H100 (hidden 3584, 256 rows, one call at 16fe23b; reports/gpu/kernelcost-3584.md), µs median of 5×100:
#   layout (candidates × hidden, warps)    peaked k 16   wide k 1024   mixed k 1024
#   4 × 1024, 4 (now)                            19.3          432.5          50.1
#   1 × 4096, 4 (e936834)                        27.3          678.8         163.7
#   16 × 256, 4 (before e936834)                 32.6          402.3          50.7
#   1 × 4096, 4, 64 programs a row               31.3          689.6          61.5
FUSE_BLOCK_K, FUSE_BLOCK_H, FUSE_WARPS = 4, 1024, 4
# programs a row (0: ⌈k / FUSE_BLOCK_K⌉, one block of candidates each); P > 0 caps them at P, each striding over
# the row's candidates. Capping did not pay at 1 × 4096 (table above), so it stays off
FUSE_PROGRAMS = 0
TALLY_BLOCK = 128
# k is a run-time argument of every kernel, not a compile-time one: a step whose k (or row bucket) is new
# launches kernels compiled already (Triton compiles per constexpr value, and a compile inside a decode loop
# stalls that step), and `warm_kernels` compiles them all, the spill's too, when the first pass is built.
# Why: at ef2c82c, where k was a compile-time value, R1's and min_p's rows each had one timed round 12-15 %
# slow in the first job of a device call, none in the second, run with Triton's cache warm. At 442e48b (k
# at run time, the kernels warmed) the same first job's R1 row ran 0.983× [0.978–0.984], no slow round, and
# min_p's [0.916–1.024] spread with vanilla's own rounds (5 %) (reports/benchmarks.md); probes/kernel_check.py
# `check_no_recompile` counts the variants on CUDA.
SPILL_BLOCK = 4096
SPILL_ROWS = 8  # rows past k a spilling pass fuses through the dense LM head (the widest of the step)
WARM_RUNS = 2  # eager runs of a CandidatePass before it is captured (Triton compiles at the first)


class CandidatePass:
    """The candidate path of one step for up to `rows` rows at `k` candidates a row: collect, fuse, tally and
    (with `spill`) the widest rows dense, on buffers this object owns, with the step's logits, β, temperatures
    and normed prediction read through a `Params` block. On CUDA (`graphs`), after WARM_RUNS eager runs, the
    launches are captured once as a CUDA graph and a step costs one parameter copy and one replay on the host.

    collect   one pass over the filtered logits: each row's surviving candidates (finite entries), their
              indices and values into [rows, k] buffers, and the row's exact candidate count (also when it is
              larger than k). Order within a row is not fixed (blocks append with an atomic), and nothing
              depends on it: every result is written back by index. Blocks without a candidate (most of
              them, after top-p) stop after their one read.
    fuse      per row with at most k candidates, one program per FUSE_BLOCK_K of them: logits_dist at its
              candidates only (LM-head rows gathered inside the kernel, products in the head's dtype, fp32
              accumulation, rounded to the head's dtype as the dense head rounds its output), then
              ref ← c1·ref + c2·dist at those indices, in place, with c1 = 1+β, c2 = −β/T per row computed in
              the kernel from β and T (esamp/fused.py's formula). Rows with more candidates than k are left.
    tally     per row, into `totals` (T_*): acting rows' candidates, their agreement (logits_dist's best
              candidate is logits_ref's), and acting rows left alone; into `top` the step's largest count.
    spill     (spill > 0 rows) the `spill` rows with the most candidates, where they have more than k: their
              logits_dist through the dense LM head (one [spill, hidden] × [hidden, vocab] GEMM: reading the head
              once, whatever their count, instead of gathering most of it row by row) and the same formula at
              their candidates, in place; they are then no longer counted as left alone. Rows past k beyond
              the widest `spill` stay as vLLM filtered them, counted.
    """

    def __init__(self, rows: int, k: int, vocab: int, weight, totals, *, graphs: bool, spill: int = 0) -> None:
        import torch

        device = weight.device
        self.rows, self.k, self.vocab, self.weight, self.totals = rows, k, vocab, weight, totals
        self.params = Params(C_SIZE, device)
        self.idx = torch.zeros(rows, k, dtype=torch.int64, device=device)
        self.values = torch.zeros(rows, k, dtype=torch.float32, device=device)
        self.dist = torch.zeros(rows, k, dtype=torch.float32, device=device)
        # per row, then the largest, in one block (one zeroing launch a step); the largest at a 16-byte
        # boundary whatever the row count, so every pass's kernels see equally aligned pointers (Triton
        # compiles a variant per alignment: warm_kernels' would not serve them otherwise)
        at = -(-rows // 4) * 4
        self._counts = torch.zeros(at + 1, dtype=torch.int32, device=device)
        self.counts, self.top = self._counts[:rows], self._counts[at:]
        self.spill = min(spill, rows)
        if self.spill:
            s, hidden = self.spill, weight.shape[1]
            self.spill_rows = torch.zeros(s, dtype=torch.int64, device=device)  # the widest rows
            self.spill_width = torch.zeros(s, dtype=torch.int32, device=device)  # their counts
            self.spill_x = torch.zeros(s, hidden, dtype=weight.dtype, device=device)  # their normed predictions
            self.spill_ref = torch.zeros(s, vocab, dtype=torch.float32, device=device)  # their filtered logits
            self.spill_dist = torch.zeros(s, vocab, dtype=weight.dtype, device=device)  # their logits_dist
            self.spill_bt = torch.zeros(s, 2, dtype=torch.float32, device=device)  # their β (0: not spilled), T
        self.graphs = graphs and device.type == "cuda"
        self.graph = None
        self.graph_error: str | None = None
        self.runs = 0

    def run(self, ref, beta, temperature, normed) -> None:
        """ref: fp32 [n ≤ rows, vocab] with unit column stride, changed in place; beta, temperature: fp32 [n],
        contiguous; normed: [n, hidden] contiguous, in the head's dtype."""
        if not ref.shape[0]:
            return
        self.params.write((ref.shape[0], ref.data_ptr(), ref.stride(0), beta.data_ptr(), temperature.data_ptr(),
                           normed.data_ptr()))
        self.runs += 1
        if self.graph is not None:
            self.graph.replay()
            return
        self._launch()
        if self.graphs and self.runs >= WARM_RUNS and self.graph_error is None:
            self._capture()

    def _launch(self) -> None:
        self._counts.zero_()
        _collect(self.params, self.vocab, self.idx, self.values, self.counts)
        _fuse(self.params, self.idx, self.counts, self.weight, self.dist)
        _tally(self.params, self.counts, self.values, self.dist, self.totals, self.top)
        if self.spill:
            import torch

            with torch.no_grad():  # the head's weight may require grad: nothing here is differentiated
                self._spill()

    def _spill(self) -> None:
        """The widest rows dense (device work only: capturable)."""
        import torch

        from driftcheck.adapters.sampler import SAMPLING_EPS

        triton, _, _, _, spill_in, spill_out = _kernels()
        torch.topk(self.counts, self.spill, out=(self.spill_width, self.spill_rows))
        grid = (self.spill, triton.cdiv(self.vocab, SPILL_BLOCK))
        spill_in[grid](self.params.dev, self.counts, self.spill_rows, self.spill_x, self.spill_ref, self.spill_bt,
                       self.vocab, self.spill_x.shape[1], K=self.k, BLOCK=SPILL_BLOCK)
        self._spill_gemm()
        spill_out[grid](self.params.dev, self.spill_rows, self.spill_ref, self.spill_dist, self.spill_bt,
                        self.vocab, EPS=SAMPLING_EPS, BLOCK=SPILL_BLOCK)
        # the totals as the tally kernel would have them had k covered these rows: agreement over their
        # candidates (first index on ties, as the dense path), and no longer left alone where they acted
        beta, temperature = self.spill_bt[:, 0], self.spill_bt[:, 1]
        taken = self.spill_width > self.k
        live = torch.isfinite(self.spill_ref)
        best_d = self.spill_dist.float().masked_fill(~live, float("-inf")).argmax(-1)
        agree = (best_d == self.spill_ref.argmax(-1)) & taken & (beta != 0)
        fused = taken & (beta != 0) & (temperature >= SAMPLING_EPS)
        self.totals[T_AGREE:T_OVERFLOW + 1] += torch.stack((agree.sum(), -fused.sum()))

    def _spill_gemm(self) -> None:
        """logits_dist of the spilled rows: their normed predictions through the whole LM head."""
        import torch

        torch.mm(self.spill_x, self.weight[: self.vocab].t(), out=self.spill_dist)

    def _capture(self) -> None:
        """The launches as one CUDA graph (captured on a side stream with capture_begin/end: no device sync;
        the spill's GEMM run once on that stream first, so cuBLAS is set up there before the capture); a
        failure is kept (`graph_error`) and the pass stays eager."""
        import torch

        from esamp.capture import no_collection

        graph = torch.cuda.CUDAGraph()
        stream = torch.cuda.Stream(device=self.weight.device)
        stream.wait_stream(torch.cuda.current_stream())
        try:
            with torch.cuda.stream(stream), no_collection():
                if self.spill:
                    with torch.no_grad():
                        self._spill_gemm()
                graph.capture_begin(capture_error_mode="thread_local")
                try:
                    self._launch()
                finally:
                    graph.capture_end()
        except Exception as exc:  # counted and reported (stats: graph_error)
            self.graph_error = f"{type(exc).__name__}: {exc}"[:300]
            return
        finally:
            torch.cuda.current_stream().wait_stream(stream)
        self.graph = graph


def _collect(params, vocab: int, idx, values, counts, block: int = 0, warps: int = 0) -> None:
    """The collect kernel over idx's rows (programs past the block's row count stop at once), in tiles of
    `block` columns with `warps` warps a program (0: COLLECT_BLOCK, COLLECT_WARPS)."""
    triton, collect, *_ = _kernels()
    rows, k = idx.shape
    block, warps = block or COLLECT_BLOCK, warps or COLLECT_WARPS
    collect[(rows, triton.cdiv(vocab, block))](params.dev, vocab, idx, values, counts, K=k, BLOCK=block,
                                               num_warps=warps)


def _fuse(params, idx, counts, weight, dist, block_k: int = 0, block_h: int = 0, warps: int = 0,
          programs: int = -1) -> None:
    """The fuse kernel over idx's rows, `block_k` candidates at a time in tiles of `block_h` hidden columns with
    `warps` warps, over ⌈k / block_k⌉ programs a row (`programs` 0), or at most `programs` a row, each striding
    over the row's candidates. Left out (0; programs -1): FUSE_BLOCK_K, FUSE_BLOCK_H, FUSE_WARPS, FUSE_PROGRAMS."""
    from driftcheck.adapters.sampler import SAMPLING_EPS

    triton, _, fuse, *_ = _kernels()
    rows, k = idx.shape
    block_k = block_k or FUSE_BLOCK_K
    per_row = triton.cdiv(k, block_k)
    programs = FUSE_PROGRAMS if programs < 0 else programs
    if programs:
        per_row = min(per_row, programs)
    fuse[(rows, per_row)](params.dev, idx, counts, weight, weight.stride(0), weight.shape[1], dist, per_row * block_k,
                          EPS=SAMPLING_EPS, K=k, BLOCK_K=block_k, BLOCK_H=block_h or FUSE_BLOCK_H,
                          num_warps=warps or FUSE_WARPS)


def _tally(params, counts, values, dist, totals, top) -> None:
    """The tally kernel over the rows of values."""
    from driftcheck.adapters.sampler import SAMPLING_EPS

    _, _, _, tally, _, _ = _kernels()
    rows, k = values.shape
    tally[(rows,)](params.dev, counts, values, dist, totals, top, EPS=SAMPLING_EPS, K=k, BLOCK=TALLY_BLOCK)


def warm_kernels(weight, vocab: int) -> None:
    """Compile the candidate kernels (collect, fuse, tally, the spill's) and set up the spill's GEMM for this
    LM head and vocabulary, before any step needs them: one spilling pass of one row at k = 16 over scratch
    tensors whose row has 2·16 candidates. k, the row count and the addresses are run-time arguments, so every
    later pass of this head launches these compiled kernels."""
    import torch

    device, k = weight.device, 16
    ref = torch.full((1, vocab), float("-inf"), device=device)
    ref[0, : 2 * k] = 0.0
    one = torch.ones(1, device=device)
    normed = torch.zeros(1, weight.shape[1], dtype=weight.dtype, device=device)
    CandidatePass(1, k, vocab, weight, new_totals(device), graphs=False, spill=1).run(ref, one, one, normed)


def new_totals(device):
    """The candidate kernels' running totals (T_*), int64 on the device."""
    import torch

    return torch.zeros(3, dtype=torch.int64, device=device)


def collect_candidates(ref, k: int):
    """(indices [rows, k] int64, values [rows, k] fp32, counts [rows] int32) of each row's finite entries,
    through the same kernel CandidatePass launches; columns at and past a row's count are not written."""
    import torch

    rows, vocab = ref.shape
    idx = torch.empty(rows, k, dtype=torch.int64, device=ref.device)
    val = torch.empty(rows, k, dtype=ref.dtype, device=ref.device)
    counts = torch.zeros(rows, dtype=torch.int32, device=ref.device)
    if rows:
        params = Params(C_SIZE, ref.device)
        params.write((rows, ref.data_ptr(), ref.stride(0)))
        _collect(params, vocab, idx, val, counts)
    return idx, val, counts


def fuse_candidates(ref, idx, values, counts, weight, normed, beta, temperature, totals, top=None):
    """CandidatePass's fuse and tally kernels on given buffers (idx, values, counts: collect_candidates'):
    in place on ref (fp32 [rows, vocab], row-contiguous), at each row's candidates (rows with at most k), ref ← (1+β)·ref + (−β/T)·(normed · weight[idx]), β zeroed
    on greedy rows (T < vLLM's SAMPLING_EPS). Rows with more than k candidates are left alone. Into `totals`
    (int64 [3], T_*): acting (β ≠ 0) rows' candidates and their agreement, and acting rows left alone; into
    `top` (int32 [1], if given) the largest count. Returns logits_dist at the candidates [rows, k] (fp32;
    unwritten past a row's count and on rows with more than k candidates)."""
    import torch

    rows, k = idx.shape
    dist = torch.empty(rows, k, dtype=torch.float32, device=ref.device)
    top = torch.zeros(1, dtype=torch.int32, device=ref.device) if top is None else top
    if rows:
        beta, temperature, normed = beta.float().contiguous(), temperature.float().contiguous(), normed.contiguous()
        params = Params(C_SIZE, ref.device)
        params.write((rows, ref.data_ptr(), ref.stride(0), beta.data_ptr(), temperature.data_ptr(),
                      normed.data_ptr()))
        _fuse(params, idx, counts, weight, dist)
        _tally(params, counts, values, dist, totals, top)
    return dist
