"""Parent side of `driftcheck stress --shrink`: run the worker, print a summary."""

from __future__ import annotations

import json
import os
import sys


STRESS_TIMEOUT_S = 900  # for the default 6 schedules; more schedules get more time


def stress_timeout(options: dict) -> int:
    return max(STRESS_TIMEOUT_S, 300 + 30 * int(options.get("examples") or 0))


def run_stress(options: dict) -> dict:
    """Run probes/stress.py in a fresh process; its JSON result."""
    from driftcheck.child import result_of, run_module
    from driftcheck.models.engine_env import cpu_engine_env

    run = run_module("driftcheck.probes.stress", [json.dumps(options)], "DRIFTCHECK_STRESS",
                     timeout=stress_timeout(options), env={**cpu_engine_env(), **os.environ})
    return result_of(run, "stress run")


def engine_died(result: dict) -> str | None:
    """The watchdog's finding: an engine process died mid-run (probes/watchdog.py)."""
    return result.get("engine_died")


def problems(result: dict) -> list[str]:
    """Every failure, most telling first: an alarm, engine-side checks, per-schedule checks."""
    out = []
    engine = result.get("engine", {})
    if engine.get("alarm"):
        out.append(engine["alarm"])
    out += engine.get("violations") or []
    for example in result.get("examples", []):
        out += [f"schedule {example['tag']}: {v}" for v in example["violations"]]
    out += result.get("return_violations", [])
    if result.get("failure") and not engine.get("alarm"):
        out.append(f"the engine failed: {result['failure']}")
    if not result.get("examples") and not out:
        out.append("no schedule ran")
    esamp = result.get("esamp")
    if result.get("options", {}).get("esamp_beta") and (not esamp or not esamp.get("intervention_calls")):
        out.append("ESamp was enabled but never intervened (post-filter hook silent)")
    return out + rank_problems(result)


def rank_problems(result: dict) -> list[str]:
    """Under tensor parallelism: every rank ran the model with its hooks firing and its own engine-side
    checks clean, and with ESamp every rank's digests (distiller state, fused logits) equal rank 0's."""
    tp = int(result.get("options", {}).get("tp") or 1)
    if tp <= 1:
        return []
    from driftcheck.probes.ranks import compare_ranks

    ranks = result.get("ranks") or []
    out = []
    for r in ranks:
        if r["rank"] == 0:
            continue  # rank 0's checks are the summary's own
        out += [f"rank {r['rank']}: {v}" for v in ([r["alarm"]] if r.get("alarm") else []) + r["violations"]]
    return out + compare_ranks(ranks, tp, esamp=bool(result.get("options", {}).get("esamp_beta")))


def print_summary(result: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=None if sys.stdout.isatty() else 140)
    opts = result["options"]
    mode = ("multiprocess" if opts.get("multiproc") else "in-process") + (
        ", compiled" if opts.get("compiled") else ", eager")
    if int(opts.get("tp") or 1) > 1:
        mode += f", tensor parallel {opts['tp']}"
    table = Table(title=f"driftcheck stress --shrink ({mode}, seed {opts.get('seed', 0)}"
                        + (f", fault {opts['fault']}" if opts.get("fault") else "") + ")")
    for col in ("schedule", "requests", "samples", "engine steps", "rows checked", "max |Δ| shallow",
                "max |Δ| deep", "violations"):
        table.add_column(col)
    for e in result["examples"]:
        errs = list(e["max_err"].values())
        table.add_row(e["tag"], str(e["requests"]), str(e["children"]), str(e["steps"]), str(e["rows_checked"]),
                      f"{errs[0]:.1e}", f"{errs[-1]:.1e}", str(len(e["violations"])))
    console.print(table)
    engine, counters = result.get("engine", {}), result.get("counters", {})
    console.print(
        f"engine side: {engine.get('steps')} steps, max live rows {engine.get('max_live_rows')}, "
        f"{engine.get('shrink_steps')} shrinking steps, tap writes {engine.get('tap_writes')}"
    )
    console.print(
        f"hooks: prepare views {counters.get('prepare_views')}, port hits {counters.get('port_hits')}, "
        f"sampler calls {counters.get('sampler_calls')}, requests added/finished "
        f"{counters.get('requests_added')}/{counters.get('requests_finished')}; returns {result.get('returns')}"
    )
    kinds = result.get("kinds") or {}
    seeded = result.get("seeded") or {}
    console.print("request kinds covered: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
                  + ("" if seeded.get("drawn") else f"; seeded requests not drawn: {seeded.get('why')}"))
    if (result.get("esamp") or {}).get("enabled"):
        e = result["esamp"]
        console.print(f"esamp: gate passed {e['gate_passed']}, train steps {e['train_steps']}, rows trained "
                      f"{e['rows_trained']}, loss mean/last {e['loss_mean']}/{e['loss_last']}, interventions "
                      f"{e['intervention_calls']}, candidates per row {e['candidates_per_row']}")
    ranks = (result.get("ranks") or []) if int(opts.get("tp") or 1) > 1 else []
    for r in ranks:
        console.print(f"rank {r['rank']} (pid {r['pid']}): prepare views {r['prepare_views']}, port hits "
                      f"{r['port_hits']}, violations {len(r['violations'])}"
                      + (f", ESamp interventions {r['interventions']}, digests {len(r['digests'])}"
                         if r.get("interventions") else ""))
    found = problems(result)
    for line in found[:12]:
        console.print(f"[bold red]FAIL[/] {line}")
    if len(found) > 12:
        console.print(f"... and {len(found) - 12} more")
    console.print(("[bold red]stress FAILED[/]" if found else "[green]stress passed[/]")
                  + f" in {result['seconds']} s")


def render_markdown(result: dict) -> str:
    """The summary as Markdown (`driftcheck stress --report`)."""
    opts = result["options"]
    found = problems(result)
    engine, counters = result.get("engine", {}), result.get("counters", {})
    examples = result.get("examples", [])
    lines = ["# driftcheck stress --shrink", "",
             "Produced by `driftcheck stress --shrink` (probes/stress.py). Do not edit by hand.", "",
             f"- options: {', '.join(f'{k}={v}' for k, v in sorted(opts.items()) if v not in (None, False))}",
             f"- verdict: **{'FAILED' if found else 'passed'}** in {result['seconds']} s",
             f"- schedules: {len(examples)}, requests {sum(e['requests'] for e in examples)}, samples "
             f"{sum(e['children'] for e in examples)}, engine steps {engine.get('steps')}, max live rows "
             f"{engine.get('max_live_rows')}, shrinking steps {engine.get('shrink_steps')}",
             f"- rows checked against transformers: {sum(e['rows_checked'] for e in examples)}, max |Δ| "
             f"{max((max(e['max_err'].values()) for e in examples), default=0.0):.1e}",
             f"- hooks: prepare views {counters.get('prepare_views')}, requests added/finished "
             f"{counters.get('requests_added')}/{counters.get('requests_finished')}",
             "", "| request kind | count |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in sorted((result.get("kinds") or {}).items())]
    seeded = result.get("seeded") or {}
    if not seeded.get("drawn"):
        lines += ["", f"Seeded requests not drawn: {seeded.get('why')}."]
    if found:
        lines += ["", "## Failures", ""] + [f"- {p}" for p in found]
    return "\n".join(lines) + "\n"
