"""How driftcheck starts a vLLM engine on this machine's CPU: the environment every
launcher sets before torch is imported, and the engine settings for the built-in
models. Measured facts behind each setting are in the docstrings."""

from __future__ import annotations

import os
from typing import Any

__all__ = ["cpu_engine_env", "use_cpu_engine_env", "tiny_engine_kwargs"]


def cpu_engine_env() -> dict[str, str]:
    """Environment variables to set before starting a vLLM engine on CPU.

    Apply them with ``os.environ.update(cpu_engine_env())`` before creating
    ``vllm.LLM`` -- ideally before ``torch`` is first imported in the process,
    because OpenMP reads ``OMP_NUM_THREADS`` once, at torch's import:

    * ``VLLM_CPU_KVCACHE_SPACE=1`` -- 1 GiB of KV cache (~524k tokens for the
      tiny model).  Setting it also skips vLLM's start-up check that
      ``gpu_memory_utilization`` x node memory is free.
    * ``OMP_NUM_THREADS=1`` -- one torch/OpenMP thread.  With
      ``VLLM_ENABLE_V1_MULTIPROCESSING=1`` vLLM binds its worker to one core
      anyway (the other is reserved for the engine-core loop).  In-process
      (``=0``), 2 threads were ~1.8x faster on an idle 2-core machine, but
      30x slower (seconds per batch: OpenMP spin-wait) as soon as anything
      else ran -- other tests, another engine -- so 1 is the robust choice.
      If torch is already imported, also call ``torch.set_num_threads(1)``:
      vLLM respects an explicit ``OMP_NUM_THREADS`` and will not lower it.
    * ``VLLM_USE_AOT_COMPILE=0`` -- vLLM 0.32 + torch 2.13 on CPU cannot load
      its own AOT compile cache ("Compiling model again due to a load failure
      ... 'function' object has no attribute 'finalize_loading'"), so every
      compiled start recompiled (~20-35 s).  Without AOT, the classic compile
      cache is hit and a warm compiled start takes ~11 s.
    * offline / quiet tokenizer settings.
    """
    return {
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "OMP_NUM_THREADS": "1",
        "VLLM_USE_AOT_COMPILE": "0",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }


def use_cpu_engine_env() -> None:
    """Put :func:`cpu_engine_env` into ``os.environ`` where the caller has not set a value
    (call it before torch is imported)."""
    for key, value in cpu_engine_env().items():
        os.environ.setdefault(key, value)


def tiny_engine_kwargs() -> dict[str, Any]:
    """Keyword arguments for ``vllm.LLM(model=..., **kwargs)`` with the tiny model.

    * ``dtype="float32"``: with ``"auto"`` vLLM downcasts float32 checkpoints
      to bfloat16 on CPU; float32 keeps vLLM's logprobs within ~5e-6 of
      transformers'.
    * ``max_model_len=512``: short context, small warm-up/profiling work.
    * ``max_num_seqs=16``: small batches are all the tests need.
    * ``seed=0``: sampling with ``SamplingParams(seed=...)`` then gives the
      same tokens in eager and compiled mode, with and without
      ``VLLM_ENABLE_V1_MULTIPROCESSING``.

    ``enforce_eager`` is left to the caller (eager starts in ~3-4 s in-process;
    compiled needs a ~35 s torch.compile the first time).
    """
    return {
        "dtype": "float32",
        "max_model_len": 512,
        "max_num_seqs": 16,
        "seed": 0,
    }


def gpu_engine_kwargs(mode: str = "eager") -> dict[str, Any]:
    """vLLM engine settings for the GPU device machine's Python-only vLLM (a stub for its compiled
    extension; see benchmarks/gpu_bundle.py): Triton attention, the native RMSNorm, no custom ops.
    mode "eager", or "graphs": full CUDA graphs for decode, without torch.compile."""
    compilation: dict[str, Any] = {"custom_ops": ["none"]}
    if mode == "graphs":
        compilation.update({"mode": 0, "cudagraph_mode": "FULL_DECODE_ONLY"})
    return {"enforce_eager": mode == "eager", "gpu_memory_utilization": 0.4, "attention_backend": "TRITON_ATTN",
            "kernel_config": {"ir_op_priority": {op: ["native"] for op in ir_ops()}}, "compilation_config": compilation}


def tensor_parallel_kwargs(tp: int, device: str) -> dict[str, Any]:
    """vLLM engine settings for tensor_parallel_size = tp (nothing for tp 1); sets the one environment
    variable the CPU needs. CPU: vLLM's default ("auto") binds each worker to its own NUMA node and refuses
    TP = 2 on a one-node machine ("Not enough allowed NUMA nodes"); measured: "nobind" runs. CUDA: the
    custom all-reduce needs compiled ops the Python-only route's stub lacks."""
    if tp <= 1:
        return {}
    if device == "cpu":
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        return {"tensor_parallel_size": tp}
    return {"tensor_parallel_size": tp, "disable_custom_all_reduce": True}


def ir_ops() -> list[str]:
    """The vLLM IR ops this release dispatches by priority (the fields of its IrOpPriorityConfig:
    rms_norm in 0.20, fused_add_rms_norm too in 0.27), so that each gets its native PyTorch form
    (the stub's kernels would fail). Import only on the device, where vLLM runs."""
    from dataclasses import fields

    try:
        from vllm.config.kernel import IrOpPriorityConfig
    except ImportError:
        return ["rms_norm"]
    return [f.name for f in fields(IrOpPriorityConfig)]
