"""reports/benchmarks.json (every run, keyed by label) -> reports/benchmarks.md."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from driftcheck.bench.shapes import BETA
from driftcheck.files import write_atomic


def record(result: dict, json_path: Path) -> None:
    """Merge one result (keyed by label, or 'scan') into the JSON file."""
    data = json.loads(json_path.read_text()) if json_path.exists() else {}
    data[result["label"]] = result
    write_atomic(json_path, json.dumps(data, indent=1, sort_keys=True) + "\n")


def render_markdown(data: dict) -> str:
    lines = ["# Benchmarks", "",
             "Produced by `driftcheck bench` (driftcheck/bench/; GPU rows by "
             "`benchmarks/gpu_bundle.py` + one device call). Do not edit by hand.", "",
             "## Throughput: ESamp vs vanilla vLLM", "",
             "Same engine settings and SamplingParams (n=16, temperature 0.8, top_p 0.95, ignore_eos, fixed "
             f"max_tokens, prefix caching off); ESamp at β={BETA} on every request; two warm engines, timed rounds "
             "alternating A B A B. Ratio = ESamp tok/s / vanilla tok/s, per pair of rounds: median [min–max]. "
             "Shape `task`: the trained task model (driftcheck/models/task.py) with real weights, its own held-out "
             "prompts, answers ended by its end token. Candidates per row after top-k/top-p/min-p: mean "
             "(median / p90 / p99 where counted).", "",
             "| machine | vLLM | shape | mode | min_p | vanilla tok/s | ESamp tok/s | ratio | candidates/row |",
             "|---|---|---|---|---|---|---|---|---|"]
    skipped = []
    for label, r in sorted(data.items()):
        if label == "scan":
            continue
        if "error" in r:
            skipped.append(f"- `{label}`: could not run: {r['error']}")
            continue
        counters = r.get("esamp_counters") or {}
        cand, q = counters.get("candidates_per_row"), counters.get("candidates_quantiles") or {}
        cand_text = f"{cand:,.0f}" if cand else "-"
        if q:
            cand_text += f" ({q['median']:,.0f} / {q['p90']:,.0f} / {q['p99']:,.0f})"
        for variant, v in r["variants"].items():
            lines.append(f"| {r['machine']} | {r['vllm']} | {r['shape']} | {r['mode']} | {variant.split('=')[1]} | "
                         f"{statistics.median(v['vanilla_tok_s']):,.0f} | {statistics.median(v['esamp_tok_s']):,.0f} | "
                         f"{v['ratio_median']:.3f} [{v['ratio_min']:.3f}–{v['ratio_max']:.3f}] | {cand_text} |")
    if skipped:
        lines += ["", "Configurations that did not run:", ""] + skipped
    scan = data.get("scan")
    if scan:
        lines += ["", "## Scan", "", f"Installed vLLM {scan['vllm']} on {scan['machine']}.", "",
                  "| what | median s | rounds | goal |", "|---|---|---|---|",
                  f"| static scan (fresh interpreter; torch imported: {scan['static_torch_imported']}) | "
                  f"{scan['static_s']:.3f} | {scan['static_rounds']} | < 1 s, no torch |",
                  f"| `scan --live` (child process imports vLLM and torch) | {scan['live_s']:.1f} | "
                  f"{scan['live_rounds']} | < 60 s |"]
    return "\n".join(lines) + "\n"
