"""The model's own final norm and LM head, across `compute_logits` contracts."""

from __future__ import annotations


def logits_from_hidden(model, hidden):
    """Logits for residual-stream rows: LM head(final norm(hidden)), as the model computes them.

    Newer releases take `compute_logits(hidden_states)`; older ones also take the
    sampling metadata (unused for plain logits).
    """
    return logits_from_normed(model, model.model.norm(hidden))


def logits_from_normed(model, normed):
    """Logits for rows already through the model's final norm: its own LM head (`compute_logits`)."""
    try:
        return model.compute_logits(normed)
    except TypeError:
        return model.compute_logits(normed, None)


def reproduction_error(model, deep_rows, logits) -> float | None:
    """max |LM head(final norm(deep rows)) - logits| over the shared vocabulary width: how far the
    deep tap's rows are from the rows the sampler received (None: the row counts differ, so the
    tap did not read this step's rows at all). The recording probe and ESamp's gate both ask."""
    import torch

    with torch.no_grad():
        recomputed = logits_from_hidden(model, deep_rows).float()
    if recomputed.shape[0] != logits.shape[0]:
        return None
    width = min(recomputed.shape[-1], logits.shape[-1])
    return float((recomputed[:, :width] - logits[:, :width].float()).abs().max())


def final_rms_norm(model):
    """(weight [hidden], eps) when the model's final norm (`model.model.norm`) presents itself as an RMS norm
    over its whole width with a weight (vLLM's RMSNorm: `weight`, `variance_epsilon`, no variance size override);
    else None. Only a claim from its attributes: ESamp's distiller computes the norm in a kernel only after the
    kernel's result matched the module's own on a real step (esamp/distiller.py `_judge_norm`), so a norm that
    computes something else (Gemma's 1 + weight, another cast order) is caught there and the module runs."""
    norm = getattr(getattr(model, "model", None), "norm", None)
    weight = getattr(norm, "weight", None)
    eps = getattr(norm, "variance_epsilon", None)
    if weight is None or not hasattr(weight, "dim") or weight.dim() != 1 or not isinstance(eps, float):
        return None
    if getattr(norm, "variance_size_override", None) is not None or not getattr(norm, "has_weight", True):
        return None
    return weight.detach(), eps


def plain_lm_head(model):
    """The LM head's weight [vocab, hidden] when `compute_logits` is exactly `hidden @ weight.T`
    on one device (no bias, scale 1, no soft cap, the whole vocabulary on this rank); else None,
    and logits must come from the model's own `compute_logits` (dense)."""
    head = getattr(model, "lm_head", None)
    processor = getattr(model, "logits_processor", None)
    weight = getattr(head, "weight", None)
    if weight is None or processor is None or weight.dim() != 2:
        return None
    if getattr(processor, "scale", 1.0) != 1.0 or getattr(processor, "soft_cap", None) is not None:
        return None
    if getattr(head, "bias", None) is not None or getattr(processor, "logits_as_input", False):
        return None
    tp = getattr(head, "tp_size", 1) or 1
    return weight if tp == 1 else None


def lm_head_shard(model):
    """Under tensor parallelism, for a plain vocab-parallel LM head (vLLM's ParallelLMHead: each rank holds
    the rows of vocabulary ids [org_vocab_start_index, org_vocab_end_index), then padding):
    (weight shard, first id it holds, ids it holds, all_reduce over the tensor-parallel group); None
    where the head is anything else (added vocabulary, a bias, a scale, a soft cap), and the caller
    takes the dense path (the model's own compute_logits, which every rank enters)."""
    head = getattr(model, "lm_head", None)
    processor = getattr(model, "logits_processor", None)
    weight = getattr(head, "weight", None)
    shard = getattr(head, "shard_indices", None)
    if weight is None or processor is None or shard is None or weight.dim() != 2:
        return None
    if (getattr(head, "tp_size", 1) or 1) == 1:
        return None
    if getattr(processor, "scale", 1.0) != 1.0 or getattr(processor, "soft_cap", None) is not None:
        return None
    if getattr(head, "bias", None) is not None or getattr(processor, "logits_as_input", False):
        return None
    if getattr(shard, "num_added_elements", 0):
        return None
    try:
        from vllm.distributed import tensor_model_parallel_all_reduce
    except ImportError:
        return None
    start, end = int(shard.org_vocab_start_index), int(shard.org_vocab_end_index)
    return weight, start, end - start, tensor_model_parallel_all_reduce


def sharded_candidate_logits(normed, shard, idx):
    """candidate_logits for a vocab-parallel head: each rank computes the candidates in its own rows
    (zero elsewhere), and an all-reduce sums them: every candidate is one rank's value plus zeros,
    the same on every rank. A collective: every rank must call it on the same steps."""
    import torch

    weight, start, held, all_reduce = shard
    local = idx - start
    inside = (local >= 0) & (local < held)
    dots = candidate_logits(None, normed, weight, local.clamp(0, max(held - 1, 0)))
    return all_reduce(torch.where(inside, dots, torch.zeros_like(dots)))


def candidate_logits(model, normed, weight, idx):
    """LM-head logits of `normed` rows [rows, hidden] at vocabulary entries `idx` [rows, k] only:
    the same dot products the dense head computes, over the gathered rows of `weight`, in the weight's
    dtype (as the dense head: bf16 products, fp32 accumulation on CUDA), returned as fp32."""
    import torch

    rows = weight.index_select(0, idx.reshape(-1)).view(*idx.shape, weight.shape[1])
    return torch.bmm(rows, normed.to(weight.dtype).unsqueeze(-1)).squeeze(-1).float()
