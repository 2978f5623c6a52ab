"""Model shapes (config.json only, dummy weights), workloads and engine settings, shared by both
benchmark workers so that only ESamp differs between them. The same code runs here on the CPU
and on the GPU device machine, where there is no model hub and no tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

#: Model shapes (config.json only; dummy weights). "cpu-mid": big enough that the forward
#: dominates on the CPU, as it does on a GPU.
SHAPES = {
    "cpu-mid": {"hidden_size": 1024, "intermediate_size": 2816, "num_hidden_layers": 8,
                "num_attention_heads": 16, "num_key_value_heads": 4, "vocab_size": 32000},
    "qwen2.5-0.5b": {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
                     "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936},
    "qwen2.5-7b": {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                   "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064},
}

#: "task": the trained built-in task model (driftcheck/models/task.py, real weights, peaked logits
#: like a trained LM's: a few candidates per row after top_p), its own held-out prompts, each answer
#: ended by the model's end token (no ignore_eos). CPU only.
TRAINED = ("task",)

#: Workloads per device: the GPU one is the device recipe's baseline (16 prompts x n=16 x 128).
WORKLOADS = {
    "cpu": {"prompts": 4, "prompt_len": 32, "n": 16, "max_tokens": 32},
    # 256 new tokens (the device recipe's 128 gave ~1 s rounds at 0.5B, whose vanilla rounds spread 34 %)
    "cuda": {"prompts": 16, "prompt_len": 32, "n": 16, "max_tokens": 256},
    "task": {"prompts": 64, "n": 16},
}
#: Sampling settings, by name: the benchmark's own (temperature 0.8, top_p 0.95, without and with
#: min_p), Qwen's recommended one and the R1-distill one (what users actually run).
SAMPLINGS = {
    "t0.8-p0.95": {"temperature": 0.8, "top_p": 0.95},
    "t0.8-p0.95-minp0.05": {"temperature": 0.8, "top_p": 0.95, "min_p": 0.05},
    "qwen-t0.6-p0.95-k20": {"temperature": 0.6, "top_p": 0.95, "top_k": 20},
    "r1-t0.6-p0.95": {"temperature": 0.6, "top_p": 0.95},
}
DEFAULT_SAMPLINGS = tuple(SAMPLINGS)
BETA = 0.8

#: Logits of a dummy-weight model: "flat" as vLLM's dummy init leaves them (near-uniform: top_p 0.95
#: keeps ~91 % of the vocabulary), or "peaked" like a trained LM's (shape_logits below: a median of
#: ~20-30 candidates per row at temperature 0.8 / top_p 0.95, measured in every row of the report).
LOGITS = ("flat", "peaked")
PEAKED_LOGIT_STD = 5.5  # std of a row's logits over the vocabulary (iid-Gaussian-like)


def write_model_dir(shape: str, root: Path) -> Path:
    """A Qwen2 config.json of the named shape (weights come from load_format="dummy"), or the
    trained task model's own directory."""
    if shape in TRAINED:
        from driftcheck.models.task import ensure_task_model

        return ensure_task_model()
    cfg = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu",
           "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
           "tie_word_embeddings": shape == "qwen2.5-0.5b", "torch_dtype": "bfloat16",
           "bos_token_id": 0, "eos_token_id": 1, "use_sliding_window": False, **SHAPES[shape]}
    out = root / shape
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    return out


def engine_kwargs(device: str, mode: str, shape: str = "") -> dict:
    """vLLM engine settings per device and mode (eager | graphs); shared by both workers."""
    common = {"load_format": "auto" if shape in TRAINED else "dummy", "skip_tokenizer_init": True, "seed": 0,
              "enable_prefix_caching": False, "max_model_len": 1024 if shape not in TRAINED else 32}
    if device == "cpu":
        return {**common, "dtype": "float32", "enforce_eager": mode == "eager", "max_num_seqs": 64}
    from driftcheck.models.engine_env import gpu_engine_kwargs

    return {**common, "dtype": "bfloat16", **gpu_engine_kwargs(mode)}


def shape_logits(model, logits: str, seed: int = 0) -> dict:
    """Make a dummy-weight model's logits `logits`-shaped, in place (both workers call it, so both
    engines run the same model). "peaked": the final norm's weight becomes random signs scaled so
    that a row's logits have std PEAKED_LOGIT_STD over the vocabulary. Signs, not a constant: with
    dummy weights the residual stream is ~ the current token's embedding, and for a tied LM head a
    constant weight would make that token's own logit dominate every row. Calibrated on the
    embedding rows of 256 tokens (what the final norm sees with dummy layers); the candidate counts
    the run then measures are what the report shows. Returns what it did."""
    if logits == "flat":
        return {"logits": logits}
    import torch

    from driftcheck.adapters.model import logits_from_hidden

    norm = model.model.norm
    hidden = norm.weight.shape[0]
    gen = torch.Generator(device="cpu").manual_seed(seed)
    signs = torch.randint(0, 2, (hidden,), generator=gen).float() * 2 - 1
    ids = torch.randint(2, model.model.embed_tokens.weight.shape[0], (256,), generator=gen)
    with torch.no_grad():
        norm.weight.copy_(signs.to(norm.weight))
        rows = model.model.embed_tokens.weight.index_select(0, ids.to(norm.weight.device))
        measured = float(logits_from_hidden(model, rows).float().std(dim=-1).median())
        norm.weight.mul_(PEAKED_LOGIT_STD / measured)
        after = float(logits_from_hidden(model, rows).float().std(dim=-1).median())
    return {"logits": logits, "logit_std_before": measured, "logit_std": after}


def workload(device: str, shape: str) -> dict:
    return WORKLOADS["task" if shape in TRAINED else device]


def prompts_and_limits(shape: str, work: dict) -> tuple[list[dict], dict]:
    """The prompts (token ids) and the SamplingParams limits of a workload."""
    if shape in TRAINED:
        from driftcheck.models.task import EOS, MAX_ANSWER, eval_problems

        return ([{"prompt_token_ids": p.prompt_ids()} for p in eval_problems(work["prompts"])],
                {"max_tokens": MAX_ANSWER, "stop_token_ids": [EOS]})
    return ([{"prompt_token_ids": [(100 + 7 * i + j) % 30000 + 2 for j in range(work["prompt_len"])]}
             for i in range(work["prompts"])], {"max_tokens": work["max_tokens"], "ignore_eos": True})
