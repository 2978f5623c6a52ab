"""Reports of one scan: a terminal table (rich), JSON, Markdown. (The release matrix is
driftcheck/matrix.py; every file is written through driftcheck.files.write_atomic.)"""

from __future__ import annotations

import json
import sys

from driftcheck.contracts.matching import BASELINE, KNOWN, MISSING, UNKNOWN
from driftcheck.contracts.runners import NAMES
from driftcheck.contracts.values import render_aspects
from driftcheck.scan import ScanResult

EXIT_MEANINGS = {0: "nothing unhandled", 1: "unhandled drift"}


def to_json(scan: ScanResult) -> dict:
    return {
        "source": scan.source,
        "distribution": scan.distribution,
        "version": scan.version,
        "fingerprint": scan.fingerprint.to_json(),
        "exit_code": scan.exit_code,
        "static_seconds": round(scan.static_seconds, 3),
        "surfaces": [
            {
                "surface": r.surface.id,
                "target": r.surface.target,
                "required": r.surface.required,
                "status": r.status,
                "contract": r.contract.id if r.contract else None,
                "nearest": r.nearest.id if r.nearest else None,
                "shim": scan.shim(r.surface.id),
                "drifts": [d.render() for d in r.drifts],
                "since_baseline": [d.render() for d in r.since_baseline],
                "where": r.observation.where,
                "aspects": render_aspects(r.observation.aspects),
                "note": r.observation.note,
            }
            for r in scan.results
        ],
        "shims": scan.plan.to_json() if scan.plan else None,
        "runners": runners_json(scan),
        "live": scan.live,
        "disagreements": scan.disagreements,
        "out_of_range": [{"surface": o.surface, "contract": o.contract, "contract_releases": o.contract_releases,
                          "tree_releases": o.tree_releases, "drift": o.drift().render()} for o in scan.out_of_range],
    }


def runners_json(scan: ScanResult) -> list[dict]:
    """Which runner an engine builds, per platform and architecture, and whether its hooks are bound."""
    return [{"platform": v.platform, "architecture": v.architecture, "runner": v.runner, "why": v.why,
             "bound": bool(scan.plan and scan.plan.bound(v.runner))} for v in scan.verdicts]


def runner_lines(scan: ScanResult) -> list[str]:
    """One line per platform and architecture, then one per runner family of the release."""
    lines = [scan.plan.describe_selection()] if scan.plan else []
    for v in scan.verdicts:
        bound = "every hook bound" if scan.plan.bound(v.runner) else "NOT BOUND"
        lines.append(f"{v.platform} engine, {v.architecture}: {NAMES[v.runner]} ({v.why}): {bound}")
    lines += [scan.plan.describe_runner(r) for r in scan.plan.runners] if scan.plan else []
    if not scan.verdicts:
        lines.append("runner selection: an unknown rule (surface runner.selection), so which runner runs is unknown")
    return lines


def _verdict(r) -> str:
    if r.status in (UNKNOWN, MISSING):
        near = f" (nearest: {r.nearest.id})" if r.nearest else ""
        return "; ".join(d.render() for d in r.drifts) + near
    if r.status == KNOWN:
        return "moved since baseline, catalogued: " + "; ".join(d.render() for d in r.since_baseline)
    return ""


def headline(scan: ScanResult) -> str:
    n = len(scan.unhandled)
    what = f"vLLM {scan.version or '?'} ({scan.distribution or 'unknown dist'}) at {scan.source}"
    if scan.exit_code == 0:
        return f"{what}: fingerprint {scan.fingerprint.digest}, no unhandled drift"
    parts = []
    if n:
        parts.append(f"{n} unhandled drift{'s' if n != 1 else ''}: " + ", ".join(r.surface.id for r in scan.unhandled))
    runners = sorted({d.new for d in scan.runner_drifts})
    if runners:
        parts.append("runner(s) an engine will build without bound hooks: " + ", ".join(NAMES[r] for r in runners))
    if scan.disagreements:
        parts.append(f"{len(scan.disagreements)} static/live disagreement(s)")
    if scan.out_of_range:
        parts.append("contract(s) out of the tree's release range: " + ", ".join(o.surface for o in scan.out_of_range))
    return f"{what}: fingerprint {scan.fingerprint.digest}, " + "; ".join(parts)


def print_table(scan: ScanResult, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=None if sys.stdout.isatty() else 160)
    table = Table(title=f"driftcheck scan - vLLM {scan.version or '?'}", show_lines=False)
    table.add_column("surface")
    table.add_column("status")
    table.add_column("contract")
    table.add_column("shim")
    table.add_column("drift / contract")
    table.add_column("where", overflow="fold")
    style = {BASELINE: "green", KNOWN: "cyan", UNKNOWN: "bold red", MISSING: "bold red"}
    for r in scan.results:
        status = r.status if r.surface.required or r.status not in (UNKNOWN, MISSING) else r.status + " (optional)"
        table.add_row(
            r.surface.id,
            f"[{style[r.status]}]{status}[/]",
            r.contract.id if r.contract else "-",
            scan.shim(r.surface.id),
            _verdict(r) if r.status in (UNKNOWN, MISSING) else r.contract.summary,
            (r.observation.where or r.observation.note).replace("vllm/", "", 1),
        )
    console.print(table)
    for line in runner_lines(scan):
        console.print(("[bold red]" if "NOT" in line else "") + line + ("[/]" if "NOT" in line else ""))
    if scan.live:
        console.print(f"live: {json.dumps(scan.live.get('summary', {}))}")
        probes = scan.live.get("probes")
        if probes:
            verdict = "passed" if probes["passed"] else f"FAILED ({len(probes['problems'])} problems)"
            console.print(f"live probes (driftcheck stress --shrink, 2 schedules): {verdict} in {probes['seconds']} s")
    for d in scan.disagreements:
        console.print(f"[bold red]static/live disagreement:[/] {d}")
    for o in scan.out_of_range:
        console.print(f"[bold red]out of range:[/] {o.drift().render()}")
    expected = scan.expected_runners
    for runner, unbound in (scan.plan.unbound.items() if scan.plan else ()):
        for u in unbound:
            label = "unbound" if runner in expected else f"unbound ({NAMES[runner]}, not built with these settings)"
            console.print(f"[bold red]{label}:[/] {u.render()}")
    console.print(headline(scan))


def to_markdown(scan: ScanResult) -> str:
    lines = [
        f"# driftcheck scan: vLLM {scan.version or '?'}",
        "",
        f"- source: `{scan.source}`",
        f"- distribution: {scan.distribution or 'unknown'}",
        f"- fingerprint: `{scan.fingerprint.digest}`",
        f"- result: {headline(scan)}",
        f"- exit code: {scan.exit_code} ({EXIT_MEANINGS.get(scan.exit_code, '')})",
        "",
        "| surface | status | contract | shim | drift | where |",
        "|---|---|---|---|---|---|",
    ]
    for r in scan.results:
        where = r.observation.where.split("/", 1)[-1] if r.observation.where else r.observation.note
        lines.append(
            f"| `{r.surface.id}` | {r.status} | {r.contract.id if r.contract else '-'} | {scan.shim(r.surface.id)} | "
            f"{_verdict(r).replace('|', '/')} | `{where}` |"
        )
    lines += ["", "## Model runners", ""] + [f"- {line}" for line in runner_lines(scan)]
    if scan.live:
        lines += ["", "## Live", "", "```json", json.dumps(scan.live, indent=2, sort_keys=True), "```"]
    if scan.disagreements:
        lines += ["", "## Static/live disagreements", ""] + [f"- {d}" for d in scan.disagreements]
    if scan.out_of_range:
        lines += ["", "## Contracts out of the tree's release range", ""] + [f"- {o.drift().render()}"
                                                                             for o in scan.out_of_range]
    return "\n".join(lines) + "\n"
