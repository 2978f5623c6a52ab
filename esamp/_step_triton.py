"""The distiller step's Triton kernels (imported only where they run: esamp/step_kernels.py `_kernels`, which
documents them; module-level so that one kernel can call another `@triton.jit` function)."""

import triton
import triton.language as tl


@triton.jit
def rounded(x, DT: tl.constexpr):
    # fp32 x rounded to DT, to nearest even: for bf16 by its bits, which CUDA's conversion does too, and
    # Triton's interpreter (the CPU tests) does not (it truncates)
    if DT == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = bits + 0x7FFF + ((bits >> 16) & 1)
        return (bits >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        return x.to(DT)


@triton.jit
def swiglu_k(ab_ptr, h_ptr, width, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    col = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = col < width
    a = tl.load(ab_ptr + row * 2 * width + col, mask=m, other=0.0).to(tl.float32)
    b = tl.load(ab_ptr + row * 2 * width + width + col, mask=m, other=0.0).to(tl.float32)
    s = a * tl.sigmoid(a)
    tl.store(h_ptr + row * width + col, rounded(s * b, h_ptr.dtype.element_ty), mask=m)


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
    tl.store(out_ptr + row * 2 * width + col, rounded((dh * b) * (sig + s * (1 - sig)), out_ptr.dtype.element_ty),
             mask=m)
    tl.store(out_ptr + row * 2 * width + width + col, rounded(dh * s, out_ptr.dtype.element_ty), mask=m)


@triton.jit
def head_k(x_ptr, o_ptr, y_ptr, pred_ptr, r_ptr, sq_ptr, inv_ptr, step_ptr, nw_ptr, normed_ptr, eps, hidden,
           NORM: tl.constexpr, BLOCK: tl.constexpr):
    # one program per row: pred = x + o in fp32; r = 2·inv·(pred − y) in the GEMMs' dtype; the row's
    # Σ(pred − y)²; with NORM, normed = (bf16(pred) · rsqrt(mean(bf16(pred)²) + eps)) cast, times the
    # norm's weight (vLLM's RMSNorm: the cast before the weight); program 0 counts the Adam step
    row = tl.program_id(0).to(tl.int64)
    if row == 0:
        tl.store(step_ptr, tl.load(step_ptr) + 1.0)
    scale = 2 * tl.load(inv_ptr)
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    ss = tl.zeros([BLOCK], dtype=tl.float32)
    for h0 in range(0, hidden, BLOCK):
        h = h0 + tl.arange(0, BLOCK)
        m = h < hidden
        p = tl.load(x_ptr + row * hidden + h, mask=m, other=0.0).to(tl.float32) \
            + tl.load(o_ptr + row * hidden + h, mask=m, other=0.0).to(tl.float32)
        tl.store(pred_ptr + row * hidden + h, p, mask=m)
        err = p - tl.load(y_ptr + row * hidden + h, mask=m, other=0.0).to(tl.float32)
        acc += err * err
        tl.store(r_ptr + row * hidden + h, rounded(err * scale, r_ptr.dtype.element_ty), mask=m)
        if NORM:
            pb = rounded(p, normed_ptr.dtype.element_ty).to(tl.float32)
            ss += pb * pb
    tl.store(sq_ptr + row, tl.sum(acc, axis=0))
    if NORM:
        tl.debug_barrier()  # the second pass reads pred back: every thread's stores first
        rstd = 1.0 / tl.sqrt(tl.sum(ss, axis=0) / hidden + eps)
        dt = normed_ptr.dtype.element_ty
        for h0 in range(0, hidden, BLOCK):
            h = h0 + tl.arange(0, BLOCK)
            m = h < hidden
            pb = rounded(tl.load(pred_ptr + row * hidden + h, mask=m, other=0.0), dt).to(tl.float32)
            nb = rounded(pb * rstd, dt).to(tl.float32)
            w = tl.load(nw_ptr + h, mask=m, other=0.0).to(tl.float32)
            tl.store(normed_ptr + row * hidden + h, rounded(nb * w, dt), mask=m)


@triton.jit
def adam_k(p_ptr, m_ptr, v_ptr, g_ptr, low_ptr, step_ptr, n, lr, b1, b2, eps, log2_b1, log2_b2,
           sq_ptr, inv_ptr, loss_ptr, rows, BLOCK: tl.constexpr, LOSS: tl.constexpr):
    # torch.optim.Adam (no weight decay, no amsgrad) on fp32 weights from bf16 gradients, the bias
    # corrections from the step count on the device; the weights' bf16 copy; program 0: the step's loss
    pid = tl.program_id(0)
    i = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = i < n
    t = tl.load(step_ptr)
    bc1 = 1.0 - tl.exp2(t * log2_b1)
    bc2_sqrt = tl.sqrt(1.0 - tl.exp2(t * log2_b2))
    g = tl.load(g_ptr + i, mask=m, other=0.0).to(tl.float32)
    avg = b1 * tl.load(m_ptr + i, mask=m, other=0.0) + (1 - b1) * g
    avg_sq = b2 * tl.load(v_ptr + i, mask=m, other=0.0) + (1 - b2) * g * g
    p = tl.load(p_ptr + i, mask=m, other=0.0) - (lr / bc1) * avg / (tl.sqrt(avg_sq) / bc2_sqrt + eps)
    tl.store(m_ptr + i, avg, mask=m)
    tl.store(v_ptr + i, avg_sq, mask=m)
    tl.store(p_ptr + i, p, mask=m)
    tl.store(low_ptr + i, rounded(p, low_ptr.dtype.element_ty), mask=m)
    if pid == 0:
        total = tl.zeros([LOSS], dtype=tl.float32)
        for r0 in range(0, rows, LOSS):
            r = r0 + tl.arange(0, LOSS)
            total += tl.load(sq_ptr + r, mask=r < rows, other=0.0)
        loss = tl.sum(total, axis=0) * tl.load(inv_ptr)
        tl.store(loss_ptr, tl.load(loss_ptr) + loss.to(tl.float64))
        tl.store(loss_ptr + 1, loss.to(tl.float64))


@triton.jit
def gather_k(params_ptr, sx_ptr, sx_stride, sy_ptr, sy_stride, x_ptr, y_ptr, inv_ptr, hidden,
             IDX64: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    n = tl.load(params_ptr + 0)  # G_ROWS
    if row == 0:
        tl.store(inv_ptr, 1.0 / (n * hidden).to(tl.float32))
    live = row < n
    at = tl.where(live, row, 0)
    if IDX64:  # G_INDEX_X, G_INDEX_Y
        sx = tl.load(tl.load(params_ptr + 1).to(tl.pointer_type(tl.int64)) + at, mask=live, other=0)
        sy = tl.load(tl.load(params_ptr + 2).to(tl.pointer_type(tl.int64)) + at, mask=live, other=0)
    else:
        sx = tl.load(tl.load(params_ptr + 1).to(tl.pointer_type(tl.int32)) + at, mask=live, other=0).to(tl.int64)
        sy = tl.load(tl.load(params_ptr + 2).to(tl.pointer_type(tl.int32)) + at, mask=live, other=0).to(tl.int64)
    rows_live = (tl.zeros([BLOCK], dtype=tl.int64) + row) < n
    for h0 in range(0, hidden, BLOCK):
        h = h0 + tl.arange(0, BLOCK)
        m = h < hidden
        real = m & rows_live  # rows past n: zeros (a zero row's error and gradients are exactly zero)
        vx = tl.load(sx_ptr + sx * sx_stride + h, mask=real, other=0.0)
        vy = tl.load(sy_ptr + sy * sy_stride + h, mask=real, other=0.0)
        tl.store(x_ptr + row.to(tl.int64) * hidden + h, vx.to(x_ptr.dtype.element_ty), mask=m)
        tl.store(y_ptr + row.to(tl.int64) * hidden + h, vy.to(y_ptr.dtype.element_ty), mask=m)
