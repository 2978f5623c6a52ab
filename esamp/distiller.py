"""The latent distiller: a two-layer gated SwiGLU MLP with a residual connection,
predicting the deep tap's hidden state from the shallow tap's, trained online.

The training step writes its gradients out (`forward_parts` + `loss_and_grads_from`, checked
against autograd in tests/test_esamp_unit.py) instead of calling `backward()`: a dozen kernels
and no autograd graph per step, and no autograd engine at all. The engine starts a device
thread at the first CUDA backward in a process, and in a tensor-parallel vLLM worker that
thread's start (`at::init_num_threads`) failed: "pool INTERNAL ASSERT FAILED ... Invalid
thread pool!".

One step = one forward on this step's rows (whose output is also the step's prediction, made
before the step's update) and one update from it. On CUDA both run on a side stream the caller waits on
only for the forward (`Step.predicted`; with side_stream=False, in the caller's stream order),
captured per row bucket once warmed up (`StepGraphs`: one CUDA graph in order, two beside it), with the rows
gathered from the taps inside the graph (`step_gathered`), so a step costs a parameter copy and a replay
instead of ~20 kernels one by one.
`precision="bf16"` runs the GEMMs in bf16 with fp32 master weights, fp32 Adam state and fp32
element-wise math (the loss curve against fp32: driftcheck/bench/precision.py), the element-wise
math in four Triton kernels (esamp/kernels.py); "auto" = bf16 on CUDA, fp32 elsewhere."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from esamp.capture import no_collection
from esamp.config import PRECISIONS  # fp32, bf16

WARMUP_STEPS = 3  # eager steps before the first capture (Adam state, cuBLAS workspaces)
MIN_BUCKET = 8


def bucket_of(rows: int) -> int:
    """The captured row count a step of `rows` rows runs in: the next power of two (at least MIN_BUCKET)."""
    return max(MIN_BUCKET, 1 << max(rows - 1, 0).bit_length())


class Distiller(nn.Module):
    """pred(x) = x + W_down(silu(W_gate x) * W_up x), with W_gate and W_up stacked as one [2·width,
    hidden] weight (`gate_up`): one GEMM computes both in the forward, one GEMM both gradients."""

    def __init__(self, hidden: int, width: int, *, seed: int = 0, device=None) -> None:
        super().__init__()
        # Its own generator, and nn.Linear's default init skipped: initializing must not
        # consume the global RNG that vLLM's unseeded sampling draws from (β=0 must leave
        # tokens unchanged).
        def linear(n_in, n_out):
            return nn.utils.skip_init(nn.Linear, n_in, n_out, bias=False, device=device or "cpu", dtype=torch.float32)

        self.width = width
        self.gate_up, self.down = linear(hidden, 2 * width), linear(width, hidden)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        with torch.no_grad():
            gate, up = (torch.randn(width, hidden, generator=gen) * hidden ** -0.5 for _ in range(2))
            self.gate_up.weight.copy_(torch.cat([gate, up]))
            self.down.weight.copy_(torch.randn(self.down.weight.shape, generator=gen) * 0.02 * width ** -0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.gate_up(x).chunk(2, dim=-1)
        return x + self.down(nn.functional.silu(a) * b)

    def weights(self):
        return self.gate_up.weight, self.down.weight

    @torch.no_grad()  # the gradients are written out (loss_and_grads_from): nothing for autograd to record
    def forward_parts(self, x: torch.Tensor, low=None) -> dict:
        """The forward, keeping what the gradients need: ab = x W_guᵀ = [a | b], s = silu(a),
        h = s·b, pred = x + h Wdᵀ. `low` (a dtype) runs the GEMMs in it, everything else in fp32.
        The PyTorch reference of the Triton step (esamp/step_kernels.py, OnlineDistiller `fused`)."""
        w = self.width
        cast = (lambda t: t) if low is None else (lambda t: t.to(low))
        up = (lambda t: t) if low is None else (lambda t: t.float())
        wgu, wd = (cast(p) for p in self.weights())
        xc = cast(x)
        ab = up(xc @ wgu.t())
        a, b = ab[:, :w], ab[:, w:]
        sig = torch.sigmoid(a)
        s = a * sig
        h = s * b
        pred = torch.add(x, up(cast(h) @ wd.t())) if low is not None else torch.addmm(x, h, wd.t())
        return {"x": xc, "wd": wd, "sig": sig, "s": s, "b": b, "h": h, "pred": pred, "low": low}

    @staticmethod
    @torch.no_grad()
    def loss_and_grads_from(parts: dict, y: torch.Tensor, inv_count=None):
        """MSE(pred, y) and its gradients for gate_up and down from `forward_parts`, written out:
        err = pred − y, loss = Σerr²·inv_count (inv_count = 1/err.numel() unless given, as a device
        scalar for captured steps whose padded rows are zeros); r = 2·err·inv_count: dWd = rᵀh,
        dh = r Wd, dW_gu = [dh·b·silu'(a) | dh·s]ᵀx with silu'(a) = σ(a)·(1 + a·(1 − σ(a)))."""
        low = parts["low"]
        x, wd, h = parts["x"], parts["wd"], parts["h"]
        cast = (lambda t: t) if low is None else (lambda t: t.to(low))
        up = (lambda t: t) if low is None else (lambda t: t.float())
        sig, s, b = parts["sig"], parts["s"], parts["b"]
        err = parts["pred"] - y
        inv = (1.0 / err.numel()) if inv_count is None else inv_count
        loss = err.pow(2).sum() * inv
        r = cast(err.mul_(2 * inv))
        dh = up(r @ wd)
        grad_down = up(r.t() @ cast(h))
        w = h.shape[1]
        dgu = torch.empty(h.shape[0], 2 * w, dtype=low or h.dtype, device=h.device)
        torch.mul(dh, s, out=dgu[:, w:])  # ∂/∂b
        torch.mul(dh.mul_(b), sig.addcmul_(s, 1 - sig), out=dgu[:, :w])  # ∂/∂a: sig + s·(1 − σ) = silu'(a)
        return loss, (up(dgu.t() @ x), grad_down)

    def loss_and_grads(self, x: torch.Tensor, y: torch.Tensor, low=None):
        """MSE(forward(x), y) and its gradients for gate_up and down (no autograd)."""
        return self.loss_and_grads_from(self.forward_parts(x, low), y)


@dataclass
class Step:
    """One queued distiller step. `pred` (and `post`, the caller's function of it) hold this step's
    prediction, made before its update; on CUDA they are written on the distiller's stream, and a
    stream reading them waits for `predicted` first (`wait`). `loss`: on the CPU a host tensor; on CUDA a
    device scalar written on the step's stream (`trained`: its event on a side stream, else None), and,
    like `pred`, a captured step's is its graph's output, valid until the distiller's next step (the
    running sums the training bookkeeping reads: OnlineDistiller.losses_to_host)."""

    pred: Any
    post: Any
    loss: Any
    predicted: Any = None
    trained: Any = None
    graphed: bool = False  # ran as the captured graphs (StepGraphs)

    def wait(self) -> None:
        """Make the current stream wait until the prediction is written (no host wait)."""
        if self.predicted is not None:
            torch.cuda.current_stream().wait_event(self.predicted)
            self.predicted = None


class StepGraphs:
    """A distiller step for up to `rows` rows captured in CUDA graphs: forward (with the caller's `post`) and
    update (gradients + Adam), in one graph in the caller's stream order; beside it (`overlap`: the caller's
    stream waits only for the forward) in one graph too, which records the distiller's `predicted` event between
    the two and its `trained` event at the end (`marks`; where torch's events cannot be graph nodes, two graphs
    sharing one memory pool and the events recorded between them on the host): the update reads what the
    forward kept. Inputs sit in static buffers whose rows past this step's are zeros: a zero row predicts zero, so its
    error and its gradients are exactly zero, and the loss is scaled by the real element count (a device
    scalar), which makes a padded step equal the unpadded one.

    With `sources` (the two taps' buffers) the graph also gathers the step's rows from them (esamp/step_kernels.py
    gather_rows), their indices and count read on the device (`run_gathered`): a step is then one parameter
    copy and one replay on the host. Without, `run` copies given rows into the buffers."""

    def __init__(self, owner: OnlineDistiller, rows: int, hidden: int, post, dtypes, sources=None,
                 index64: bool = True) -> None:
        device = owner.device
        self.rows, self.filled = rows, 0
        # the inputs' own dtypes (the model's): copying into them is exact, as the eager step reads them
        self.x = torch.zeros(rows, hidden, dtype=dtypes[0], device=device)
        self.y = torch.zeros(rows, hidden, dtype=dtypes[1], device=device)
        self.inv = torch.ones((), dtype=torch.float32, device=device)
        self.sources = sources  # the graph reads their memory: kept alive as long as it
        self.params = None
        if sources is not None:
            from esamp import kernels, step_kernels

            self.params = kernels.Params(step_kernels.G_SIZE, device, index64=index64)
            with torch.cuda.stream(owner.stream):  # compiled and loaded before the capture (n = 0: zeros)
                step_kernels.gather_rows(self.params, sources[0], sources[1], self.x, self.y, self.inv)
        self.forward = torch.cuda.CUDAGraph()
        # beside the caller, with events a graph can record (external): one graph that records the distiller's
        # `predicted` event after the forward and its `trained` event after the update, so a step is one replay
        # and no event record on the host; without such events, two graphs and the records between them
        self.marks = owner.overlap and owner.external_events
        self.predicted = owner.predicted if self.marks else None
        # deferred (`defer_update`): the update is a graph of its own, replayed once the sampler queued its draw
        # (no reference to the owner is kept: a StepGraphs → owner → graphs cycle is freed only by Python's cyclic
        # collector, which may run inside a later capture, and freeing a CUDA graph there invalidates that capture)
        self.deferred = owner.overlap and owner.defer_update
        self.update = torch.cuda.CUDAGraph() if owner.overlap and (not self.marks or self.deferred) else None

        def forward():
            if sources is not None:
                from esamp import step_kernels

                step_kernels.gather_rows(self.params, sources[0], sources[1], self.x, self.y, self.inv)
            return owner.forward(owner.inputs(self.x), owner.inputs(self.y), self.inv, post)

        with no_collection(), torch.cuda.graph(self.forward, stream=owner.stream, capture_error_mode="thread_local"):
            parts, self.post = forward()
            if self.marks:
                owner.predicted.record(owner.stream)
            if self.update is None:  # in order, or marked and not deferred: the whole step is one graph
                self.loss = owner.update(parts, owner.inputs(self.y), self.inv)
                if self.marks:
                    owner.trained.record(owner.stream)
        self.pred, self.parts = parts["pred"], parts
        if self.update is not None:
            with no_collection(), torch.cuda.graph(self.update, pool=self.forward.pool(), stream=owner.stream,
                                                    capture_error_mode="thread_local"):
                self.loss = owner.update(parts, owner.inputs(self.y), self.inv)
                if self.marks:
                    owner.trained.record(owner.stream)

    def _replay(self, n: int, owner: OnlineDistiller):
        """Replay the forward and (unless deferred) the update; the owner's events `predicted` and `trained` after
        them, recorded on the host where the graph does not record them."""
        self.forward.replay()
        predicted = self.predicted if self.marks else owner._predicted()  # marked: recorded by the graph itself
        if self.deferred:
            owner._defer(self)  # the owner replays its update later (OnlineDistiller.flush)
        elif self.update is not None:
            self.update.replay()
            owner._mark_trained()  # two graphs, unmarked (marked and not deferred: one graph)
        return self.pred[:n], (self.post[:n] if self.post is not None else None), self.loss, predicted

    def run(self, shallow, deep, owner: OnlineDistiller):
        """Replay the step on these rows for `owner` (the distiller that captured it)."""
        n = shallow.shape[0]
        self.x[:n].copy_(shallow)
        self.y[:n].copy_(deep)
        if n < self.filled:
            self.x[n:self.filled].zero_()
            self.y[n:self.filled].zero_()
        self.filled = n
        self.inv.fill_(1.0 / (n * shallow.shape[1]))
        return self._replay(n, owner)

    def run_gathered(self, index_x, index_y, n: int, owner: OnlineDistiller):
        """Replay the step on the sources' rows index_x[:n], index_y[:n] (device tensors; the graph gathers
        them)."""
        self.params.write((n, index_x.data_ptr(), index_y.data_ptr()))
        return self._replay(n, owner)


class OnlineDistiller:
    """A distiller with its optimizer: `step` = predict, then train (MSE + Adam) on the same rows.

    On a CUDA device the step runs on a side stream by default (`side_stream=True`), so the update overlaps
    the next forward; the caller's stream waits only for the prediction (`Step.wait`), and the next step's
    forward sees every earlier update (stream order: no host synchronisation). `side_stream=False` runs it on
    the caller's stream, in order. Measured on the H200 at the 7B shape (peaked logits, CUDA graphs), both
    halves of one device call at ef2c82c (`gpu_device.sh --ab side_stream=false`; reports/benchmarks.md):
    Qwen's top_k 20 setting 0.995× [0.991–0.999] beside against 0.985× [0.984–0.988] in order, R1's setting
    0.985× [0.845–0.993] against 0.981× [0.979–0.982]. (At 07fa488, before the loss copies, the parameter
    writes and the launches' host work were trimmed, in order had measured faster: 0.979× against 0.956×.)
    With bf16 GEMMs on CUDA the element-wise work runs in Triton kernels (`fused`; ESAMP_TRITON=0: the
    PyTorch path). On the CPU all of it is synchronous.
    """

    # vLLM samples under torch.inference_mode(); the distiller's parameters, its optimizer
    # state and its training graph must live outside it, so each entry point leaves it.

    def __init__(self, hidden: int, width: int, lr: float, *, seed: int = 0, device=None,
                 precision: str = "auto", graphs: bool = True, side_stream: bool = True,
                 defer_update: bool = False) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"distiller precision must be one of {PRECISIONS}, not {precision!r}")
        self.device = torch.device(device or "cpu")
        on_cuda = self.device.type == "cuda"
        with torch.inference_mode(False):
            self.model = Distiller(hidden, width, seed=seed, device=device)
            # fused Adam on CUDA: one kernel per step instead of a launch per op and tensor; capturable:
            # its step count lives on the device, so the update can be captured in a CUDA graph
            self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr, fused=True if on_cuda else None,
                                              capturable=on_cuda)
        if precision == "auto":  # bf16 GEMMs where tensor cores run them; the loss curve: bench/precision.py
            precision = "bf16" if on_cuda else "fp32"
        self.precision = precision
        self.low = torch.bfloat16 if precision == "bf16" else None
        # the step in Triton kernels (esamp/step_kernels.py) where the GEMMs are bf16 and Triton runs (CUDA, or
        # Triton's interpreter on the CPU for the tests): bf16 weight copies and Adam in one kernel (`FlatAdam`),
        # the final norm in the kernel that ends the forward where the model's is a plain RMS norm
        from esamp import kernels

        self.fused = self.low is not None and kernels.available_on(self.device)
        self.lr = lr
        self._flat_adam = None  # step_kernels.FlatAdam, made at the first fused step
        self.norms: dict = {}  # post -> (weight, eps, dtype) for the kernel norm, or None: the post itself runs
        self.norm_path: str | None = None  # how post(prediction) was computed: "kernel", or why the module ran
        self.stream = torch.cuda.Stream(device=device) if on_cuda else None  # captures on it; runs on it if `overlap`
        self.overlap = on_cuda and side_stream
        # beside the caller and captured: the update's graph is replayed only when the caller says its stream has
        # queued the step's draw (`flush`), so the update runs after the sampler, in the device's idle time
        # between two steps, instead of beside vLLM's filter; a step whose flush never came is flushed by the next
        self.defer_update = self.overlap and defer_update
        self._pending_update = None  # the StepGraphs whose update graph was deferred and not replayed yet
        self._caller_mark = None  # one event, recorded again on the caller's stream for every wait of the side stream
        self.graphs_on = on_cuda and graphs and os.environ.get("ESAMP_GRAPHS", "1") != "0"
        self.graphs: dict = {}  # (bucket, post, dtypes, gathered-from sources) -> StepGraphs
        self.graph_error: str | None = None  # why capturing failed (the steps then run eagerly)
        self.trained = None  # side stream: an event after the last update queued on it (in order: None)
        self.predicted = None  # side stream: an event after the last forward queued on it (`_predicted`)
        self.external_events = False  # side stream: the two events can be recorded inside a CUDA graph
        if self.overlap:
            try:  # events a captured graph records as its own nodes (torch >= 2.7); else recorded on the host
                self.predicted, self.trained = torch.cuda.Event(external=True), torch.cuda.Event(external=True)
                self.external_events = True
            except TypeError:
                pass
        self.steps = self.graph_steps = 0
        # every update adds its loss to losses[0] and writes it to losses[1], on the device (in the captured
        # steps too); the host copies both every few steps (`losses_to_host`, esamp/training.py)
        with torch.inference_mode(False):
            self.losses = torch.zeros(2, dtype=torch.float64, device=self.device)
        self._loss_sum, self._loss_last = self.losses[0], self.losses[1]

    def inputs(self, x):
        """The rows as the forward takes them: as they come for bf16 GEMMs (the casts happen inside),
        fp32 otherwise."""
        return x if self.low is not None else x.float()

    def forward(self, x, y, inv_count, post):
        """(parts for `update`, post(prediction) or None) for the rows x, y; inv_count as for `update`. The fused
        step computes the loss gradient here too (one kernel ends the forward: esamp/step_kernels.py head)."""
        if self.fused:
            return self._fused_forward(x, y, inv_count, post)
        parts = self.model.forward_parts(x, self.low)
        return parts, (post(parts["pred"]) if post is not None else None)

    def update(self, parts: dict, y, inv_count=None):
        """Gradients from `forward` and one Adam step; returns the loss (device scalar; for the fused step the
        distiller's last-loss slot, valid until its next step)."""
        if self.fused:
            return self._fused_update(parts)
        loss, grads = self.model.loss_and_grads_from(parts, y, inv_count)
        for param, grad in zip(self.model.weights(), grads):
            param.grad = grad
        self.optimizer.step()
        self._loss_sum.add_(loss)
        self._loss_last.copy_(loss)
        return loss

    def flat_adam(self):
        """The fused step's weights, Adam state, bf16 weight copies and gradient buffer (step_kernels.FlatAdam;
        the module's weights become views of its flat fp32 buffer)."""
        if self._flat_adam is None:
            from esamp.step_kernels import FlatAdam

            with torch.inference_mode(False):
                self._flat_adam = FlatAdam(self.model.weights(), self.lr, self.low)
        return self._flat_adam

    def _fused_forward(self, x, y, inv_count, post):
        from esamp import step_kernels

        adam = self.flat_adam()
        w_gu, w_d = adam.low_views
        x = x if x.dtype == self.low else x.to(self.low)
        if inv_count is None:
            inv_count = torch.full((), 1.0 / max(y.numel(), 1), dtype=torch.float32, device=y.device)
        ab = x @ w_gu.t()
        h = step_kernels.swiglu(ab)
        norm = self._kernel_norm(post)
        pred, r, sq, normed = step_kernels.head(x, h @ w_d.t(), y.contiguous(), inv_count, adam.steps, norm)
        if post is not None and post not in self.norms and not self._capturing():
            normed = self._judge_norm(post, pred, normed)  # the first step with this post: judge the kernel norm
        elif post is not None and normed is None:
            normed = post(pred)
        return {"x": x, "ab": ab, "h": h, "r": r, "sq": sq, "inv": inv_count, "pred": pred}, normed

    def _fused_update(self, parts: dict):
        from esamp import step_kernels

        adam = self.flat_adam()
        _, w_d = adam.low_views
        g_gu, g_d = adam.grad_views
        dgu = step_kernels.swiglu_grad(parts["ab"], parts["r"] @ w_d)
        torch.mm(dgu.t(), parts["x"], out=g_gu)
        torch.mm(parts["r"].t(), parts["h"], out=g_d)
        adam.step(parts["sq"], parts["inv"], self.losses)
        return self._loss_last

    def _kernel_norm(self, post):
        """(weight, eps, dtype) when post(prediction) is computed inside the head kernel: the verdict of the first
        step with this post (`_judge_norm`), or before it, what the post claims (outside a capture: a graph
        captured before the verdict runs the post itself)."""
        if post is None:
            return None
        if post in self.norms:
            return self.norms[post]
        return None if self._capturing() else self._claimed_norm(post)

    @staticmethod
    def _claimed_norm(post):
        """(weight, eps, dtype) where `post` says it is the model's plain RMS norm (`post.rms_norm`, adapters.model
        final_rms_norm); else None."""
        rms = getattr(post, "rms_norm", None)
        if rms is None:
            return None
        weight, eps = rms
        return weight, eps, getattr(post, "dtype", weight.dtype)

    def _capturing(self) -> bool:
        return self.device.type == "cuda" and torch.cuda.is_current_stream_capturing()

    def _judge_norm(self, post, pred, normed):
        """The first step with this post: the kernel's norm (if it ran) against post(prediction) on the same rows
        (a host wait, once, in an eager warm-up step). The kernel serves later steps only if they agree within two
        units in the last place of the post's dtype; else the post runs every step, and `norm_path` says why."""
        want = post(pred)
        if normed is None:
            self.norms[post] = None
            self.norm_path = "module: the model's final norm is not a plain RMS norm"
            return want
        ulp = torch.finfo(want.dtype).eps
        gap = (normed.float() - want.float()).abs()
        allowed = want.float().abs() * (2 * ulp) + 1e-6 * float(want.float().abs().max() if want.numel() else 0)
        if want.shape == normed.shape and bool((gap <= allowed).all()):
            self.norms[post] = self._claimed_norm(post)
            self.norm_path = "kernel"
            return normed
        self.norms[post] = None
        self.norm_path = (f"module: the kernel's RMS norm differs from the model's by up to "
                          f"{float(gap.max()) if gap.numel() else float('nan'):.3g}")
        return want

    def step(self, shallow: torch.Tensor, deep: torch.Tensor, post=None) -> Step:
        """Queue one step on these rows: the prediction (and post(prediction)), then the update."""
        with torch.inference_mode(False), torch.no_grad():
            if self.stream is None:
                parts, out = self.forward(self.inputs(shallow), self.inputs(deep), None, post)
                pred = parts["pred"]  # the update works in place on other buffers, never on this one
                loss = self.update(parts, self.inputs(deep))
                self.steps += 1
                return Step(pred, out, loss.detach().clone())
            main = torch.cuda.current_stream()
            if self.overlap:
                self._wait_caller()  # the rows (and the last fuse) are ready
                self.flush(after_caller=False)  # a deferred update left by the last step: before this forward
            with self._on_step_stream():
                graphs = self._graphs(shallow.shape[0], shallow.shape[1], shallow.dtype, deep.dtype, post)
                if graphs is not None:  # the replay marks `trained` (StepGraphs._replay)
                    pred, out, loss_dev, predicted = graphs.run(shallow, deep, self)
                    self.graph_steps += 1
                else:
                    parts, out = self.forward(self.inputs(shallow), self.inputs(deep), None, post)
                    pred = parts["pred"]
                    predicted = self._predicted()
                    loss_dev = self.update(parts, self.inputs(deep))
                    self._mark_trained()
            if self.overlap:
                for t in (shallow, deep):
                    t.record_stream(self.stream)  # the caller's rows stay allocated until the step used them
                for t in (pred, out):
                    if t is not None and graphs is None:
                        t.record_stream(main)  # the caller reads them on its stream
            self.steps += 1
            return Step(pred, out, loss_dev, predicted, self.trained, graphs is not None)

    def step_gathered(self, src_x: torch.Tensor, src_y: torch.Tensor, index_x: torch.Tensor,
                      index_y: torch.Tensor, n: int, post=None) -> Step:
        """`step` on the rows src_x[index_x[:n]], src_y[index_y[:n]] (indices: int64 or int32, on the device):
        past the warm-up, on CUDA, the captured step gathers them itself (one parameter copy and one replay
        on the host); else they are selected here first."""
        with torch.inference_mode(False), torch.no_grad():
            graphs = None
            if self.stream is not None and index_x.dtype in (torch.int64, torch.int32) \
                    and index_y.dtype == index_x.dtype and src_x.stride(1) == 1 and src_y.stride(1) == 1:
                graphs = self._graphs(n, src_x.shape[1], src_x.dtype, src_y.dtype, post, (src_x, src_y),
                                      index_x.dtype == torch.int64)
            if graphs is None:
                return self.step(src_x.index_select(0, index_x[:n]), src_y.index_select(0, index_y[:n]), post)
            if self.overlap:
                self._wait_caller()
                self.flush(after_caller=False)
            with self._on_step_stream():
                pred, out, loss_dev, predicted = graphs.run_gathered(index_x, index_y, n, self)
            if self.overlap:
                for t in (index_x, index_y):
                    t.record_stream(self.stream)
            self.graph_steps += 1  # the replay marks `trained` (StepGraphs._replay)
            self.steps += 1
            return Step(pred, out, loss_dev, predicted, self.trained, True)

    def _wait_caller(self) -> None:
        """The side stream waits for everything the caller's stream has queued so far (`Stream.wait_stream`
        without its new event per call: one event, recorded again; a wait enqueued holds the record before it)."""
        if self._caller_mark is None:
            self._caller_mark = torch.cuda.Event()
        self._caller_mark.record(torch.cuda.current_stream())
        self.stream.wait_event(self._caller_mark)

    def _defer(self, graphs: StepGraphs) -> None:
        """A captured step's update, left for `flush`."""
        if self._pending_update is not None:  # never two: each step flushes the last one before its forward
            self.flush(after_caller=False)
        self._pending_update = graphs

    @property
    def update_pending(self) -> bool:
        return self._pending_update is not None

    def flush(self, after_caller: bool = True) -> bool:
        """Queue the update a deferred step left (`defer_update`), if any, on the side stream: with after_caller,
        after everything the caller's stream queued so far (called once the sampler queued its draw, the update
        then runs while the host prepares the next step); else right after the step's forward (a read of the
        weights or the loss, or the next step, needs it now). Returns whether there was one."""
        graphs, self._pending_update = self._pending_update, None
        if graphs is None:
            return False
        if after_caller:
            self._wait_caller()
        with torch.cuda.stream(self.stream):
            graphs.update.replay()
        if not graphs.marks:  # else the graph recorded `trained` itself
            self._mark_trained()
        return True

    def _mark_trained(self) -> None:
        """On the side stream, an event after the update just queued there (`wait_trained`); in the caller's
        stream order there is nothing to mark: that order has it."""
        if self.overlap:
            if self.trained is None:
                self.trained = torch.cuda.Event()
            self.trained.record(self.stream)

    def losses_to_host(self):
        """(pinned host float64 [2]: the sum of the losses of every step queued so far, and the last one's;
        an event after the copy): queued on the stream the updates run on, so no host wait (reading a device
        scalar with .item() would wait for everything queued on the main stream, i.e. the next forward). On the
        CPU: a copy, and None (written already)."""
        if self.stream is None:
            return self.losses.clone(), None
        self.flush(after_caller=False)  # its update adds its loss
        host = torch.empty(2, dtype=torch.float64, pin_memory=True)
        ready = torch.cuda.Event()
        with self._on_step_stream():
            host.copy_(self.losses, non_blocking=True)
            ready.record()
        return host, ready

    def _on_step_stream(self):
        """The stream the steps' work is queued on: the side stream with `overlap`; else the caller's, as it
        is (no stream switch on the host)."""
        return torch.cuda.stream(self.stream) if self.overlap else contextlib.nullcontext()

    def _predicted(self):
        """On the side stream: an event the caller's stream waits for before reading the prediction
        (`Step.wait`); in order: None, the caller's stream order has it already. One event per distiller,
        recorded again by every step (a new event and its creation per step is host time in every step): a wait
        enqueued waits for the record before it, and a step's prediction is waited for (`Step.wait`) before the
        next step records; a wait enqueued later only waits longer (for a later forward of the same stream),
        never too little. The same holds for `trained`."""
        if not self.overlap:
            return None
        if self.predicted is None:
            self.predicted = torch.cuda.Event()
        self.predicted.record()
        return self.predicted

    def _graphs(self, rows: int, hidden: int, x_dtype, y_dtype, post, sources=None,
                index64: bool = True) -> StepGraphs | None:
        """The captured step for `rows` rows, capturing it the first time; None: run eagerly. `sources`: the
        buffers the rows are gathered from (StepGraphs keeps their addresses: a new buffer, a new graph)."""
        if not self.graphs_on or self.steps < WARMUP_STEPS or self.graph_error is not None:
            return None
        where = None if sources is None else (sources[0].data_ptr(), sources[0].stride(0), sources[1].data_ptr(),
                                              sources[1].stride(0), index64)
        key = (bucket_of(rows), post, x_dtype, y_dtype, where)
        if key not in self.graphs:
            try:
                self.graphs[key] = StepGraphs(self, key[0], hidden, post, key[2:4], sources, index64)
            except Exception as exc:  # counted and reported (stats: graph_error); the step runs eagerly
                self.graph_error = f"{type(exc).__name__}: {exc}"[:300]
                return None
        return self.graphs[key]

    def wait_trained(self) -> None:
        """Make the current stream wait for every queued update (reading the weights on it; in order, they are
        in its order already); a deferred one is queued first."""
        self.flush(after_caller=False)
        if self.trained is not None:
            torch.cuda.current_stream().wait_event(self.trained)

    def train_step(self, shallow: torch.Tensor, deep: torch.Tensor) -> float:
        """One synchronous training step; returns the loss."""
        step = self.step(shallow, deep)
        self.flush(after_caller=False)
        if step.trained is not None:
            step.trained.synchronize()
        return float(step.loss)
