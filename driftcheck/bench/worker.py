"""One benchmark worker: a warm engine in its own process (`python -m driftcheck.bench.worker OPTS`).

`vanilla` binds nothing; `esamp` does `import esamp.runtime` and enables ESamp at β on every
request. The worker warms up every batch shape the timed rounds will see, says it is ready,
then answers commands on stdin (round | profile | stats | quit), one JSON line each, on the
original stdout; everything vLLM prints goes to stderr.
"""

from __future__ import annotations

import json
import os
import sys
import time

from driftcheck import env
from driftcheck.bench.profile import profile_round
from driftcheck.bench.shapes import BETA, SAMPLINGS, engine_kwargs, prompts_and_limits, shape_logits


def _worker(opts: dict) -> None:
    # The protocol goes to the original stdout; everything vLLM prints goes to stderr.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    os.environ[env.VLLM_MULTIPROCESSING] = "0"
    if opts["device"] == "cpu":
        from driftcheck.models.engine_env import use_cpu_engine_env

        use_cpu_engine_env()
    else:
        os.environ.setdefault("VLLM_USE_DEEP_GEMM", "0")
    esamp = opts["variant"] == "esamp"
    if esamp:
        import esamp.runtime  # noqa: F401 - binds the shims in this (engine) process
    import torch
    from vllm import LLM, SamplingParams

    if opts["device"] == "cpu":
        torch.set_num_threads(1)
    extra = {"additional_config": {"esamp": {"enable": True}}} if esamp else {}
    t0 = time.perf_counter()
    llm = LLM(model=opts["model_dir"], **engine_kwargs(opts["device"], opts["mode"], opts.get("shape", "")), **extra)
    load_s = time.perf_counter() - t0
    # the same weights in both workers: in place, before any timed round (CUDA graphs read the same memory)
    shaped = llm.apply_model(lambda model: shape_logits(model, opts.get("logits", "flat")))[0]
    work = opts["workload"]
    prompts, limits = prompts_and_limits(opts.get("shape", ""), work)

    def params(sampling: str):
        return SamplingParams(n=work["n"], detokenize=False, **limits,
                              extra_args={"esamp_beta": BETA} if esamp else None, **SAMPLINGS[sampling])

    def generate(sampling: str) -> tuple[int, float]:
        t = time.perf_counter()
        outs = llm.generate(prompts, params(sampling), use_tqdm=False)
        return sum(len(c.token_ids) for o in outs for c in o.outputs), time.perf_counter() - t

    for sampling in [opts["samplings"][0], *opts["samplings"]]:  # warm-up: every batch shape the rounds see
        generate(sampling)  # (the first setting twice: ESamp's first round ran ~30 % slow, allocating)
    proto.write(json.dumps({"ready": True, "load_s": load_s, "vllm": _vllm_version(), "shaped": shaped,
                            "torch": torch.__version__}) + "\n")
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "round":
            tokens, seconds = generate(cmd["sampling"])
            proto.write(json.dumps({"tokens": tokens, "seconds": seconds, "tok_s": tokens / seconds}) + "\n")
        elif cmd["op"] == "profile":
            from esamp import counters as esamp_counters

            set_ranges = (lambda on: setattr(esamp_counters, "RANGES", on)) if esamp else None
            proto.write(json.dumps({"profile": profile_round(lambda: generate(cmd["sampling"]), set_ranges)}) + "\n")
        elif cmd["op"] == "stats":
            stats = {}
            if esamp:
                from esamp.controller import CONTROLLER

                from driftcheck.shims.hook_points import HOOKS

                stats = CONTROLLER.stats() if CONTROLLER is not None else {}
                stats["runner"] = HOOKS.runner_built  # the model runner this engine built (v1 | v2)
                if cmd.get("reset") and CONTROLLER is not None:
                    CONTROLLER.reset_counts()  # the next sampling setting's candidates are counted afresh
            proto.write(json.dumps({"esamp": stats}) + "\n")
        else:
            break


def _vllm_version() -> str:
    import vllm

    return getattr(vllm, "__version__", "?")


if __name__ == "__main__":
    _worker(json.loads(sys.argv[1]))
