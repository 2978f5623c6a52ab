"""The distiller step on CUDA in as few kernels as it takes (esamp/distiller.py, `fused`: bf16 GEMMs,
fp32 master weights and Adam state, everything else in fp32 inside these Triton kernels).

One step, ten launches, captured as CUDA graphs once warm (esamp/distiller.py StepGraphs):

    forward  gather_rows   the step's rows from the two taps' buffers, by indices read on the device
             GEMM          ab = x · W_guᵀ                       (bf16 weights kept by `adam`, no cast kernel)
             swiglu        h = silu(a)·b
             GEMM          o = h · W_dᵀ
             head          pred = x + o (fp32); the model's final RMS norm of it (when the model's norm is one,
                           checked against the model's own module first: OnlineDistiller._kernel_norm); the loss
                           gradient r = 2·inv·(pred − y) and each row's Σ(pred − y)²; the Adam step count + 1
    update   GEMM          dh = r · W_d
             swiglu_grad   [dh·b·silu'(a) | dh·s]
             GEMM ×2       the gradients, bf16, straight into one flat buffer
             adam          Adam on the flat fp32 master weights (torch's formula, bias corrections from the step
                           count on the device), their bf16 copy for the next step's GEMMs, and the step's loss
                           (Σ row sums × inv, summed in a fixed order) into the running loss sums

Measured before this layout (H200, hidden 3584, 256 rows, captured, in stream order): 0.126 ms a step in ~28
kernels, of which the weight and gradient casts, the loss bookkeeping and the final norm's eight PyTorch ops
were launches of a few µs each (reports/distiller-precision.md). The PyTorch bf16 path in esamp/distiller.py
(`Distiller.forward_parts` / `loss_and_grads_from`) is the reference these kernels are checked against
(probes/kernel_check.py, in Triton's interpreter on the CPU in the test suite)."""

from __future__ import annotations

import functools
import math

from esamp.kernels import _triton

STEP_BLOCK = 1024
ADAM_BLOCK = 2048
LOSS_BLOCK = 1024


@functools.cache  # imported, and so compiled, lazily, once per process
def _kernels():
    triton, _ = _triton()
    from esamp import _step_triton as k

    return triton, k.swiglu_k, k.swiglu_grad_k, k.head_k, k.adam_k, k.gather_k


#: The gather kernel's block (the distiller step's rows from the taps): its row count and the addresses of
#: its two index tensors, in a `kernels.Params` block.
G_ROWS, G_INDEX_X, G_INDEX_Y = range(3)
G_SIZE = 3


def swiglu(ab):
    """h [rows, w] = silu(a)·b for ab = [a | b] ([rows, 2w], contiguous), in ab's dtype."""
    import torch

    triton, kernel, *_ = _kernels()
    rows, width = ab.shape[0], ab.shape[1] // 2
    h = torch.empty(rows, width, dtype=ab.dtype, device=ab.device)
    if rows:
        kernel[(rows, triton.cdiv(width, STEP_BLOCK))](ab, h, width, BLOCK=STEP_BLOCK)
    return h


def swiglu_grad(ab, dh):
    """[dh·b·silu'(a) | dh·s] ([rows, 2w], ab's dtype) for ab = [a | b] and dh [rows, w]."""
    import torch

    triton, _, kernel, *_ = _kernels()
    rows, width = dh.shape
    out = torch.empty(rows, 2 * width, dtype=ab.dtype, device=ab.device)
    if rows:
        kernel[(rows, triton.cdiv(width, STEP_BLOCK))](ab, dh.contiguous(), out, width, BLOCK=STEP_BLOCK)
    return out


def head(x, o, y, inv, step, norm=None):
    """(pred fp32, r in o's dtype, per-row Σ(pred − y)² fp32, normed or None) for x, o, y [rows, hidden]
    (contiguous), inv an fp32 device scalar (1 / the real element count), step the Adam step count (fp32 device
    scalar, incremented here). norm = (weight [hidden], eps, dtype): also the RMS norm of pred in that dtype."""
    import torch

    triton, _, _, kernel, _, _ = _kernels()
    rows, hidden = x.shape
    pred = torch.empty(rows, hidden, dtype=torch.float32, device=x.device)
    r = torch.empty(rows, hidden, dtype=o.dtype, device=x.device)
    sq = torch.empty(rows, dtype=torch.float32, device=x.device)
    normed = None
    if norm is not None:
        weight, eps, dtype = norm
        normed = torch.empty(rows, hidden, dtype=dtype, device=x.device)
    if rows:
        kernel[(rows,)](x, o, y, pred, r, sq, inv, step, weight if norm is not None else pred,
                        normed if normed is not None else pred, float(eps) if norm is not None else 0.0, hidden,
                        NORM=norm is not None, BLOCK=STEP_BLOCK)
    return pred, r, sq, normed


def gather_rows(params, src_x, src_y, x, y, inv) -> None:
    """x[r], y[r] = src_x[index_x[r]], src_y[index_y[r]] for r < n, zeros for the rows past n, inv = 1/(n·hidden):
    n and the indices' addresses read from `params` (G_*: a `kernels.Params` block; indices int64 or int32 by
    `params.index64`). src_*: [tokens, hidden] with unit column stride; x, y: [rows, hidden] contiguous."""
    triton, *_, kernel = _kernels()
    rows, hidden = x.shape
    if rows:
        kernel[(rows,)](params.dev, src_x, src_x.stride(0), src_y, src_y.stride(0), x, y, inv, hidden,
                        IDX64=params.index64, BLOCK=STEP_BLOCK)


class FlatAdam:
    """Adam over a model's weights held in one flat fp32 buffer (the parameters become views of it), with its
    state, the weights' copy in the GEMMs' dtype (`low`, written by each step: no cast kernel) and a flat buffer
    the gradient GEMMs write into (`grad`, in that dtype), all updated by one kernel launch (`step`)."""

    def __init__(self, params, lr: float, low, betas=(0.9, 0.999), eps: float = 1e-8) -> None:
        import torch

        params = list(params)
        device = params[0].device
        sizes = [p.numel() for p in params]
        self.n = sum(sizes)
        self.flat = torch.empty(self.n, dtype=torch.float32, device=device)
        self.low = torch.empty(self.n, dtype=low, device=device)
        self.grad = torch.zeros(self.n, dtype=low, device=device)
        self.low_views, self.grad_views, at = [], [], 0
        for p, size in zip(params, sizes):
            part = slice(at, at + size)
            self.flat[part].copy_(p.detach().reshape(-1))
            p.data = self.flat[part].view(p.shape)  # the module's weights are the flat buffer's views
            self.low_views.append(self.low[part].view(p.shape))
            self.grad_views.append(self.grad[part].view(p.shape))
            at += size
        self.low.copy_(self.flat)
        self.exp_avg = torch.zeros_like(self.flat)
        self.exp_avg_sq = torch.zeros_like(self.flat)
        self.steps = torch.zeros((), dtype=torch.float32, device=device)  # counted by `head`, read by `step`
        self.lr, self.betas, self.eps = float(lr), tuple(float(b) for b in betas), float(eps)

    def step(self, row_sq, inv, losses) -> None:
        """One Adam step from `grad` (the step count already advanced by `head`), and the step's loss Σrow_sq·inv
        added to losses[0] and written to losses[1] (float64)."""
        triton, _, _, _, kernel, _ = _kernels()
        b1, b2 = self.betas
        kernel[(triton.cdiv(self.n, ADAM_BLOCK),)](
            self.flat, self.exp_avg, self.exp_avg_sq, self.grad, self.low, self.steps, self.n, self.lr, b1, b2,
            self.eps, math.log2(b1), math.log2(b2), row_sq, inv, losses, row_sq.shape[0],
            BLOCK=ADAM_BLOCK, LOSS=LOSS_BLOCK)
