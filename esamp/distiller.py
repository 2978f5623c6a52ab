"""The latent distiller: a two-layer gated SwiGLU MLP with a residual connection,
predicting the deep tap's hidden state from the shallow tap's, trained online.

The training step writes its gradients out (`loss_and_grads`, checked against autograd in
tests/test_distiller.py) instead of calling `backward()`: a dozen kernels and no autograd graph
per step, and no autograd engine at all. The engine starts a device thread at the first
CUDA backward in a process, and in a tensor-parallel vLLM worker that thread's start
(`at::init_num_threads`) failed: "pool INTERNAL ASSERT FAILED ... Invalid thread pool!"."""

from __future__ import annotations

import torch
from torch import nn


class Distiller(nn.Module):
    """pred(x) = x + W_down(silu(W_gate x) * W_up x)."""

    def __init__(self, hidden: int, width: int, *, seed: int = 0, device=None) -> None:
        super().__init__()
        # Its own generator, and nn.Linear's default init skipped: initializing must not
        # consume the global RNG that vLLM's unseeded sampling draws from (β=0 must leave
        # tokens unchanged).
        def linear(n_in, n_out):
            return nn.utils.skip_init(nn.Linear, n_in, n_out, bias=False, device=device or "cpu", dtype=torch.float32)

        self.gate, self.up, self.down = linear(hidden, width), linear(hidden, width), linear(width, hidden)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        with torch.no_grad():
            for layer, std in ((self.gate, hidden ** -0.5), (self.up, hidden ** -0.5), (self.down, 0.02 * width ** -0.5)):
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) * std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(nn.functional.silu(self.gate(x)) * self.up(x))

    def loss_and_grads(self, x: torch.Tensor, y: torch.Tensor):
        """MSE(forward(x), y) and its gradients for gate, up and down, written out (no autograd):
        a = x Wgᵀ, b = x Wuᵀ, h = silu(a)·b, err = x + h Wdᵀ − y, loss = mean(err²);
        r = 2·err / err.numel(): dWd = rᵀh, dh = r Wd, dWu = (dh·silu(a))ᵀx,
        dWg = (dh·b·silu'(a))ᵀx with silu'(a) = σ(a)·(1 + a·(1 − σ(a)))."""
        wg, wu, wd = self.gate.weight, self.up.weight, self.down.weight
        a, b = x @ wg.t(), x @ wu.t()
        sig = torch.sigmoid(a)
        s = a * sig
        h = s * b
        err = torch.addmm(x - y, h, wd.t())
        loss = err.pow(2).mean()
        r = err.mul_(2.0 / err.numel())
        dh = r @ wd
        grad_down = r.t() @ h
        grad_up = (dh * s).t() @ x
        grad_gate = (dh.mul_(b).mul_(sig.addcmul_(s, 1 - sig))).t() @ x  # sig + s·(1 − σ) = silu'(a)
        return loss, (grad_gate, grad_up, grad_down)


class OnlineDistiller:
    """A distiller with its optimizer: `predict` without grad, `train_async` with MSE + Adam.

    On a CUDA device the training step runs on a side stream, so it overlaps the next
    forward instead of delaying it; `predict` makes the current stream wait for the
    last step queued there, so a prediction always sees every update queued before it
    (on the device, in stream order: no host synchronisation). On the CPU all of it
    is synchronous.
    """

    # vLLM samples under torch.inference_mode(); the distiller's parameters, its optimizer
    # state and its training graph must live outside it, so each entry point leaves it.

    def __init__(self, hidden: int, width: int, lr: float, *, seed: int = 0, device=None) -> None:
        on_cuda = torch.device(device or "cpu").type == "cuda"
        with torch.inference_mode(False):
            self.model = Distiller(hidden, width, seed=seed, device=device)
            # fused Adam on CUDA: one kernel per step instead of a launch per op and tensor
            self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr, fused=True if on_cuda else None)
        self.stream = torch.cuda.Stream(device=device) if on_cuda else None
        self.trained = None  # event: the last training step queued on `stream` is done
        self.steps = 0

    def predict(self, shallow: torch.Tensor) -> torch.Tensor:
        if self.trained is not None:
            torch.cuda.current_stream().wait_event(self.trained)
        with torch.inference_mode(False), torch.no_grad():
            return self.model(shallow.float())

    def train_async(self, shallow: torch.Tensor, deep: torch.Tensor):
        """Queue one training step; returns (loss as a host tensor, event that marks it written, or None
        on the CPU, where it is written already)."""
        if self.stream is None:
            return self._train(shallow, deep), None
        self.stream.wait_stream(torch.cuda.current_stream())  # the rows (and the last predict) are ready
        with torch.cuda.stream(self.stream):
            # The loss goes to pinned host memory on the side stream: reading a device scalar
            # (.item()) would wait for everything queued on the main stream, i.e. the next forward.
            loss = torch.empty((), dtype=torch.float32, pin_memory=True)
            loss.copy_(self._train(shallow, deep), non_blocking=True)
        for t in (shallow, deep):
            t.record_stream(self.stream)  # the caller's rows stay allocated until the step used them
        self.trained = torch.cuda.Event()
        self.trained.record(self.stream)
        return loss, self.trained

    def train_step(self, shallow: torch.Tensor, deep: torch.Tensor) -> float:
        """One synchronous training step; returns the loss."""
        loss, ready = self.train_async(shallow, deep)
        if ready is not None:
            ready.synchronize()
        return float(loss)

    def _train(self, shallow: torch.Tensor, deep: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(False), torch.no_grad():
            loss, grads = self.model.loss_and_grads(shallow.float(), deep.float())
            for param, grad in zip((self.model.gate.weight, self.model.up.weight, self.model.down.weight), grads):
                param.grad = grad
            self.optimizer.step()
        self.steps += 1
        return loss
