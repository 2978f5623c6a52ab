"""The candidate path on CUDA in two Triton kernels, instead of ~30 PyTorch launches and a top-k
over the whole vocabulary (the largest cost measured on the H200: aten::topk ~0.6 ms per step
on [256, 152k] logits).

collect   one pass over the filtered logits: each row's surviving candidates (finite entries),
          their indices and values into [rows, k] buffers, and the row's exact candidate count
          (also when it is larger than k). Order within a row is not fixed (blocks append with an
          atomic), and nothing depends on it: every result below is written back by index.
          Blocks without a candidate (most of them, after top-p) stop after their one read.
fuse      per row with at most k candidates: logits_dist at its candidates only (LM-head rows
          gathered inside the kernel, products in the head's dtype, fp32 accumulation, rounded to
          the head's dtype as the dense head rounds its output), then ref ← c1·ref + c2·dist at
          those indices, in place, with c1 = 1+β, c2 = −β/T per row computed in the kernel from β
          and T (esamp/fused.py's formula). Rows with more candidates than k are left as vLLM
          filtered them and, if β ≠ 0, counted on the device.

The distiller step's element-wise work (esamp/distiller.py, bf16 GEMMs), the same fp32 arithmetic
as its PyTorch path in one launch each instead of 3-7:
swiglu        h = silu(a)·b from the gate/up GEMM's output [a | b], rounded to its dtype;
residual      pred = x + o in fp32 (o = h Wdᵀ);
scaled_error  r = 2·inv·(pred − y) in the GEMMs' dtype, and each row's Σ(pred − y)² in fp32
              (one program per row: the loss is summed in a fixed order, the same on every rank);
swiglu_grad   [dh·b·silu'(a) | dh·s] for the gate/up weight's gradient GEMM.

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


@functools.cache  # compiled lazily, once per process: Triton is imported only where the kernels run
def _kernels():
    triton, tl = _triton()

    @triton.jit
    def collect(ref_ptr, ref_stride, vocab, idx_ptr, val_ptr, count_ptr, K: tl.constexpr, BLOCK: tl.constexpr):
        row = tl.program_id(0)
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
    def fuse(ref_ptr, ref_stride, idx_ptr, count_ptr, w_ptr, w_stride, x_ptr, hidden, beta_ptr, temp_ptr,
             over_ptr, dist_ptr, EPS: tl.constexpr, K: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_H: tl.constexpr):
        row = tl.program_id(0)
        n = tl.load(count_ptr + row)
        t = tl.load(temp_ptr + row).to(tl.float32)
        greedy = t < EPS  # β is zeroed on greedy rows, and vLLM did not divide them (esamp/fused.py)
        b = tl.where(greedy, 0.0, tl.load(beta_ptr + row).to(tl.float32))
        c1 = 1 + b
        c2 = -b / tl.where(greedy, 1.0, t)
        if n > K:
            if b != 0:
                tl.atomic_add(over_ptr, 1)  # an acting row left as vLLM filtered it: counted
        else:
            for start in range(0, n, BLOCK_K):
                j = start + tl.arange(0, BLOCK_K)
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

    return triton, collect, fuse


@functools.cache
def _step_kernels():
    triton, tl = _triton()

    @triton.jit
    def swiglu_k(ab_ptr, h_ptr, width, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        col = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        m = col < width
        a = tl.load(ab_ptr + row * 2 * width + col, mask=m, other=0.0).to(tl.float32)
        b = tl.load(ab_ptr + row * 2 * width + width + col, mask=m, other=0.0).to(tl.float32)
        s = a * tl.sigmoid(a)
        tl.store(h_ptr + row * width + col, (s * b).to(h_ptr.dtype.element_ty), mask=m)

    @triton.jit
    def swiglu_grad_k(ab_ptr, dh_ptr, out_ptr, width, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        col = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        m = col < width
        a = tl.load(ab_ptr + row * 2 * width + col, mask=m, other=0.0).to(tl.float32)
        b = tl.load(ab_ptr + row * 2 * width + width + col, mask=m, other=0.0).to(tl.float32)
        dh = tl.load(dh_ptr + row * width + col, mask=m, other=0.0).to(tl.float32)
        sig = tl.sigmoid(a)
        s = a * sig
        tl.store(out_ptr + row * 2 * width + col, ((dh * b) * (sig + s * (1 - sig))).to(out_ptr.dtype.element_ty),
                 mask=m)
        tl.store(out_ptr + row * 2 * width + width + col, (dh * s).to(out_ptr.dtype.element_ty), mask=m)

    @triton.jit
    def residual_k(x_ptr, o_ptr, pred_ptr, n, BLOCK: tl.constexpr):
        i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        m = i < n
        x = tl.load(x_ptr + i, mask=m, other=0.0).to(tl.float32)
        o = tl.load(o_ptr + i, mask=m, other=0.0).to(tl.float32)
        tl.store(pred_ptr + i, x + o, mask=m)

    @triton.jit
    def scaled_error_k(pred_ptr, y_ptr, inv_ptr, r_ptr, sq_ptr, hidden, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        scale = 2 * tl.load(inv_ptr)
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for h0 in range(0, hidden, BLOCK):
            h = h0 + tl.arange(0, BLOCK)
            m = h < hidden
            err = tl.load(pred_ptr + row * hidden + h, mask=m, other=0.0) \
                - tl.load(y_ptr + row * hidden + h, mask=m, other=0.0).to(tl.float32)
            acc += err * err
            tl.store(r_ptr + row * hidden + h, (err * scale).to(r_ptr.dtype.element_ty), mask=m)
        tl.store(sq_ptr + row, tl.sum(acc, axis=0))

    return triton, swiglu_k, swiglu_grad_k, residual_k, scaled_error_k


STEP_BLOCK = 1024


def swiglu(ab):
    """h [rows, w] = silu(a)·b for ab = [a | b] ([rows, 2w], contiguous), in ab's dtype."""
    import torch

    triton, kernel, _, _, _ = _step_kernels()
    rows, width = ab.shape[0], ab.shape[1] // 2
    h = torch.empty(rows, width, dtype=ab.dtype, device=ab.device)
    if rows:
        kernel[(rows, triton.cdiv(width, STEP_BLOCK))](ab, h, width, BLOCK=STEP_BLOCK)
    return h


def swiglu_grad(ab, dh):
    """[dh·b·silu'(a) | dh·s] ([rows, 2w], ab's dtype) for ab = [a | b] and dh [rows, w]."""
    import torch

    triton, _, kernel, _, _ = _step_kernels()
    rows, width = dh.shape
    out = torch.empty(rows, 2 * width, dtype=ab.dtype, device=ab.device)
    if rows:
        kernel[(rows, triton.cdiv(width, STEP_BLOCK))](ab, dh.contiguous(), out, width, BLOCK=STEP_BLOCK)
    return out


def residual(x, o):
    """x + o in fp32 (x, o: [rows, hidden], contiguous, any float dtype)."""
    import torch

    triton, _, _, kernel, _ = _step_kernels()
    pred = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    n = x.numel()
    if n:
        kernel[(triton.cdiv(n, STEP_BLOCK),)](x.contiguous(), o.contiguous(), pred, n, BLOCK=STEP_BLOCK)
    return pred


def scaled_error(pred, y, inv, dtype):
    """(r = 2·inv·(pred − y) in `dtype`, [rows] Σ(pred − y)² in fp32) for fp32 pred; inv: an fp32 device
    scalar."""
    import torch

    triton, _, _, _, kernel = _step_kernels()
    rows, hidden = pred.shape
    r = torch.empty(rows, hidden, dtype=dtype, device=pred.device)
    sq = torch.empty(rows, dtype=torch.float32, device=pred.device)
    if rows:
        kernel[(rows,)](pred, y.contiguous(), inv, r, sq, hidden, BLOCK=STEP_BLOCK)
    return r, sq


COLLECT_BLOCK = 4096


def collect_candidates(ref, k: int):
    """(indices [rows, k] int64, values [rows, k] fp32, counts [rows] int32) of each row's finite
    entries; columns at and past a row's count are not written (read them through `live(counts, k)`)."""
    import torch

    triton, collect, _ = _kernels()
    rows, vocab = ref.shape
    idx = torch.empty(rows, k, dtype=torch.int64, device=ref.device)
    val = torch.empty(rows, k, dtype=ref.dtype, device=ref.device)
    counts = torch.zeros(rows, dtype=torch.int32, device=ref.device)
    if rows:
        collect[(rows, triton.cdiv(vocab, COLLECT_BLOCK))](ref, ref.stride(0), vocab, idx, val, counts,
                                                           K=k, BLOCK=COLLECT_BLOCK)
    return idx, val, counts


def live(counts, k: int):
    """[rows, k] mask of the columns `collect_candidates` wrote."""
    import torch

    return torch.arange(k, device=counts.device).unsqueeze(0) < counts.unsqueeze(1)


def fuse_candidates(ref, idx, counts, weight, normed, beta, temperature, overflow):
    """In place on ref (fp32 [rows, vocab], row-contiguous): at each row's candidates (rows with at
    most k), ref ← (1+β)·ref + (−β/T)·(normed · weight[idx]), β zeroed on greedy rows (T < vLLM's
    SAMPLING_EPS). Rows with more than k candidates are left alone and, where β ≠ 0, added to
    `overflow` (int32 [1], on the device). Returns logits_dist at the candidates [rows, k] (fp32;
    unwritten past a row's count and on rows with more than k candidates)."""
    import torch

    from driftcheck.adapters.sampler import SAMPLING_EPS

    triton, _, fuse = _kernels()
    rows, k = idx.shape
    hidden = weight.shape[1]
    dist = torch.empty(rows, k, dtype=torch.float32, device=ref.device)
    if rows:
        fuse[(rows,)](ref, ref.stride(0), idx, counts, weight, weight.stride(0), normed.contiguous(), hidden,
                      beta.contiguous(), temperature.contiguous(), overflow, dist, EPS=SAMPLING_EPS, K=k,
                      BLOCK_K=16, BLOCK_H=256)
    return dist
