"""Hidden-state taps on decoder layers that return `(hidden_states, residual)`
(Qwen2 and Llama families, 0.10.0-0.33.0).

A tapped layer owns two persistent buffers, registered when the layer is
built (before vLLM compiles the model or captures CUDA graphs): `tap` holds
the residual stream after the layer (hidden_states + residual) for every
packed token of the last forward, `stamp` counts forwards. The write is a
registered custom op, so torch.compile keeps it in the graph and a CUDA graph
replays it; no Python runs per step. Layer i's output is the shallow tap; the
last layer's output is the deep tap (the input of the model's final norm).
"""

from __future__ import annotations

import re

from driftcheck.patching import Patch
from driftcheck.shims.hook_points import HOOKS, Tap

HOOK_POINT = "layer_taps"
HANDLES = {
    "model.qwen2.decoder_layer": ("decoder_layer/residual-pair",),
    "model.llama.decoder_layer": ("decoder_layer/residual-pair",),
    "model.qwen2.final_norm": ("model/fused-add-norm",),
    "model.llama.final_norm": ("model/fused-add-norm",),
}

_LAYER_RE = re.compile(r"layers\.(\d+)$")


def _layer_index(args, kwargs) -> int | None:
    prefix = kwargs.get("prefix")
    if prefix is None:
        prefix = next((a for a in reversed(args) if isinstance(a, str)), "")
    m = _LAYER_RE.search(prefix or "")
    return int(m.group(1)) if m else None


def attach_tap(layer, index: int | None) -> None:
    import torch
    from vllm.config import get_current_vllm_config

    layer._driftcheck_tapped = False
    if index is None:
        return
    config = get_current_vllm_config()
    esamp = (getattr(config, "additional_config", None) or {}).get("esamp") or {}
    HOOKS.engine_esamp_enabled = bool(esamp.get("enable"))  # so ESamp can tell "no view" from "off"
    num_layers = config.model_config.hf_text_config.num_hidden_layers
    HOOKS.num_layers = num_layers
    wanted = {t if t >= 0 else num_layers + t for t in HOOKS.tap_layers}
    if index not in wanted:
        return
    param = next(layer.parameters())
    rows = max(config.scheduler_config.max_num_batched_tokens, config.scheduler_config.max_num_seqs)
    hidden = config.model_config.hf_text_config.hidden_size
    layer.register_buffer("_driftcheck_tap", torch.zeros(rows, hidden, dtype=param.dtype, device=param.device),
                          persistent=False)
    layer.register_buffer("_driftcheck_stamp", torch.zeros(1, dtype=torch.int64, device=param.device),
                          persistent=False)
    layer._driftcheck_tapped = True
    HOOKS.taps[index] = Tap(index, layer._driftcheck_tap, layer._driftcheck_stamp)


def patches(ctx) -> list[Patch]:
    import torch
    from vllm.model_executor.models.llama import LlamaDecoderLayer
    from vllm.model_executor.models.qwen2 import Qwen2DecoderLayer

    import driftcheck.shims.tap_op  # noqa: F401 - registers torch.ops.driftcheck.tap_rows

    def make_init(original):
        def __init__(self, *args, **kwargs):
            original(self, *args, **kwargs)
            attach_tap(self, _layer_index(args, kwargs))

        return __init__

    def make_forward(original):
        def forward(self, *args, **kwargs):
            hidden_states, residual = original(self, *args, **kwargs)
            if self._driftcheck_tapped:
                torch.ops.driftcheck.tap_rows(hidden_states, residual, self._driftcheck_tap, self._driftcheck_stamp)
            return hidden_states, residual

        return forward

    out = []
    for cls, family in ((Qwen2DecoderLayer, "qwen2"), (LlamaDecoderLayer, "llama")):
        out.append(Patch(cls, "__init__", make_init, __name__))
        out.append(Patch(cls, "forward", make_forward, __name__, surface=f"model.{family}.decoder_layer"))
    return out
