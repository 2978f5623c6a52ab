"""Reports of one scan: a terminal table (rich), JSON, Markdown. (The release matrix is
driftcheck/matrix.py; every file is written through driftcheck.files.write_atomic.)"""

from __future__ import annotations

import json
import sys

from driftcheck.contracts.matching import BASELINE, KNOWN, MISSING, UNKNOWN
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
        "live": scan.live,
        "disagreements": scan.disagreements,
    }


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
    if scan.disagreements:
        parts.append(f"{len(scan.disagreements)} static/live disagreement(s)")
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
    if scan.live:
        console.print(f"live: {json.dumps(scan.live.get('summary', {}))}")
        probes = scan.live.get("probes")
        if probes:
            verdict = "passed" if probes["passed"] else f"FAILED ({len(probes['problems'])} problems)"
            console.print(f"live probes (driftcheck stress --shrink, 2 schedules): {verdict} in {probes['seconds']} s")
    for d in scan.disagreements:
        console.print(f"[bold red]static/live disagreement:[/] {d}")
    for u in scan.plan.unbound if scan.plan else []:
        console.print(f"[bold red]unbound:[/] {u.render()}")
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
    if scan.live:
        lines += ["", "## Live", "", "```json", json.dumps(scan.live, indent=2, sort_keys=True), "```"]
    if scan.disagreements:
        lines += ["", "## Static/live disagreements", ""] + [f"- {d}" for d in scan.disagreements]
    return "\n".join(lines) + "\n"
