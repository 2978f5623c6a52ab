"""The latent distiller: a two-layer gated SwiGLU MLP with a residual connection,
predicting the deep tap's hidden state from the shallow tap's, trained online."""

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


class OnlineDistiller:
    """A distiller with its optimizer; `predict` without grad, `train_step` with MSE + Adam."""

    # vLLM samples under torch.inference_mode(); the distiller's parameters, its optimizer
    # state and its training graph must live outside it, so each entry point leaves it.

    def __init__(self, hidden: int, width: int, lr: float, *, seed: int = 0, device=None) -> None:
        with torch.inference_mode(False):
            self.model = Distiller(hidden, width, seed=seed, device=device)
            self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr)
        self.steps = 0

    def predict(self, shallow: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(False), torch.no_grad():
            return self.model(shallow.float().clone())

    def train_step(self, shallow: torch.Tensor, deep: torch.Tensor) -> float:
        with torch.inference_mode(False), torch.enable_grad():
            pred = self.model(shallow.float().clone())
            loss = nn.functional.mse_loss(pred, deep.float().clone())
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        self.steps += 1
        return float(loss.detach())
