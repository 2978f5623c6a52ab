"""Run the built-in tiny model on a real engine, optionally with the shims and the
recording probe, and print what came out (tokens and the hook counters) as JSON.

Run as a script (`python -m driftcheck.probes.engine_run '{...}'`) in a fresh
process: vLLM's engine-core process is spawned, and shims must not leak
between runs. Options (JSON object):
  multiproc  bool  VLLM_ENABLE_V1_MULTIPROCESSING (default true)
  eager      bool  enforce_eager (default true; false = torch.compile + graphs) -- on the CPU
  device     "cpu" (default) | "cuda": on the GPU device machine, with its engine settings
  mode       "eager" (default) | "graphs" -- on "cuda" (models.engine_env.gpu_engine_kwargs)
  imports    bool  also report the distributions this process imported (what a GPU bundle must carry)
  shims      bool  import esamp.runtime first (default true); "auto": do not import it, so only the
                   plugin can bind the shims (when the engine config enables ESamp)
  admission  list  instead of the workload: one generate() call per entry, each one request whose
                   extra_args is the entry (null: none), in order; each outcome is its tokens or the
                   error it raised (a bad request between good ones)
  probes     bool  attach the recording probe (default = shims)
  tp         int   tensor_parallel_size (default 1): every worker process writes its own stats, with its rank
  n, max_tokens, seeds ...  the workload (see WORKLOAD)
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

WORKLOAD = {
    "prompts": ["hello world", "the quick brown fox jumps over the lazy dog and then",
                "a", "once upon a time in a land far away there lived"],
    "max_tokens": [24, 7, 15, 31],  # mixed lengths: requests finish at different steps
    "n": 3,
    "temperature": 0.9,
    "top_p": 0.9,
    "top_k": 50,
    "min_p": 0.02,
}


def main(options: dict) -> dict:
    stats_dir = tempfile.mkdtemp(prefix="driftcheck-stats-")
    from driftcheck import env
    from driftcheck.models.engine_env import use_cpu_engine_env

    use_cpu_engine_env()  # before torch is imported; the caller's values win
    os.environ[env.STATS_DIR] = stats_dir
    os.environ[env.VLLM_MULTIPROCESSING] = "1" if options.get("multiproc", True) else "0"
    shims = options.get("shims", True)
    if options.get("probes", bool(shims)):
        os.environ[env.PROBES] = "1"
    if shims is True:
        import esamp.runtime  # noqa: F401 - binds the shims here and, via the plugin, in the engine
        if options.get("probes", shims):
            from driftcheck.probes.recorder import attach

            attach()
    from vllm import LLM, SamplingParams

    from driftcheck.models.engine_env import gpu_engine_kwargs, tensor_parallel_kwargs, tiny_engine_kwargs
    from driftcheck.models.tiny import ensure_tiny_model

    work = {**WORKLOAD, **options.get("workload", {})}
    t0 = time.perf_counter()
    engine = {**tiny_engine_kwargs(), "enforce_eager": options.get("eager", True)}
    if options.get("device") == "cuda":
        engine.update(gpu_engine_kwargs(options.get("mode", "eager")))
    if options.get("esamp"):
        engine["additional_config"] = {"esamp": options["esamp"]}
    engine.update(tensor_parallel_kwargs(options.get("tp", 1), options.get("device", "cpu")))
    llm = LLM(model=str(ensure_tiny_model()), **engine)
    load_s = time.perf_counter() - t0
    dog = watch_engine()
    betas = options.get("beta")  # None: no extra_args at all; a number or a list per prompt
    if betas is not None and not isinstance(betas, list):
        betas = [betas] * len(work["prompts"])
    params = [
        SamplingParams(n=work["n"], max_tokens=m, temperature=work["temperature"], top_p=work["top_p"],
                       top_k=work["top_k"], min_p=work["min_p"], seed=100 + i,
                       extra_args={"esamp_beta": betas[i]} if betas is not None else None)
        for i, m in enumerate(work["max_tokens"])
    ]
    t0 = time.perf_counter()
    tokens = []
    if options.get("admission") is not None:
        outcomes = admission(llm, options["admission"], dog)
        dog.stop()
        del llm  # shuts the engine down: its processes must not outlive this one
        from driftcheck.shims.hook_points import read_stats

        return {"outcomes": outcomes, "stats": read_stats(stats_dir), "main_pid": os.getpid()}
    for _ in range(options.get("rounds", 1)):  # successive generate() calls reuse batch slots
        try:
            outputs = llm.generate(work["prompts"], params, use_tqdm=False)
        except Exception:
            dog.check()  # an engine process that died under the call is the finding: one line, exit 4
            raise
        tokens.append([[list(c.token_ids) for c in out.outputs] for out in outputs])
    gen_s = time.perf_counter() - t0
    tokens = tokens[0] if options.get("rounds", 1) == 1 else tokens
    dog.stop()
    del llm
    from driftcheck.shims.hook_points import read_stats

    imported = None
    if options.get("imports"):
        from importlib.metadata import packages_distributions

        owners = packages_distributions()
        imported = sorted({d for m in list(sys.modules) for d in owners.get(m.split(".")[0], [])})
    return {
        "imports": imported,
        "tokens": tokens,
        "request_ids": [out.request_id for out in outputs],
        "stats": read_stats(stats_dir),
        "load_s": round(load_s, 1),
        "generate_s": round(gen_s, 2),
        "main_pid": os.getpid(),
    }


def watch_engine():
    """An engine process that dies mid-run ends this run at once, one line, exit 4 (probes/watchdog.py)."""
    from driftcheck.probes.watchdog import watch

    def on_death(message: str) -> None:
        print(f"driftcheck: error: {message}", file=sys.stderr, flush=True)
        dog.kill_all()
        os._exit(4)

    dog = watch(on_death)
    return dog


def admission(llm, entries: list, dog) -> list[dict]:
    """One generate() per entry (see the module docstring); the engine keeps serving after a
    rejected request, or the next generate() hangs (the caller's timeout turns that into a failure).
    An error with an engine process dead under it is that death (`dog.check`: one line, exit 4), not a
    rejection."""
    from vllm import SamplingParams

    outcomes = []
    for extra in entries:
        params = SamplingParams(n=2, max_tokens=6, temperature=0.9, top_p=0.9, seed=11, extra_args=extra)
        try:
            out = llm.generate(["the quick brown fox"], params, use_tqdm=False)
            outcomes.append({"tokens": [list(c.token_ids) for c in out[0].outputs]})
        except Exception as exc:  # noqa: BLE001 - the rejection is the outcome
            dog.check(grace=0.5)
            outcomes.append({"error": f"{type(exc).__name__}: {exc}"})
    return outcomes


if __name__ == "__main__":
    result = main(json.loads(sys.argv[1]) if len(sys.argv) > 1 else {})
    print("DRIFTCHECK_RUN " + json.dumps(result))
    sys.stdout.flush()
    os._exit(0)  # vLLM's background threads sometimes hold exit; the result is out
