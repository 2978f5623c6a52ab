"""`driftcheck matrix`: scan many releases, one report each, plus the matrix table.

Each release's reports are written once it is scanned; matrix.md only when every release asked
for was scanned, so a failed run never replaces the last good matrix with "not scanned" rows. An
unreachable package index stops the run at once (FetchFailed: exit 3)."""

from __future__ import annotations

import json
from pathlib import Path

from driftcheck.contracts.catalog import SURFACES
from driftcheck.errors import DriftcheckError, FetchFailed
from driftcheck.files import check_target, write_atomic, write_files
from driftcheck.readers.source_tree import fetch_release
from driftcheck.report import to_json, to_markdown
from driftcheck.scan import ScanResult, scan_tree


def run_matrix(releases: list[str], out_dir: Path, progress=None) -> tuple[list[ScanResult], dict[str, str]]:
    scans: list[ScanResult] = []
    failures: dict[str, str] = {}
    check_target(out_dir / "matrix.md")  # refused now, not after every release was scanned
    for release in releases:
        try:
            scan = scan_tree(fetch_release(release), env_value="")  # VLLM_USE_V2_MODEL_RUNNER unset
        except FetchFailed:
            raise  # the index is unreachable: every later fetch would fail the same way
        except DriftcheckError as exc:
            failures[release] = str(exc)
            continue
        finally:
            if progress:
                progress(release)
        scan.version = release  # the release asked for, as the index names it
        scans.append(scan)
        write_files({out_dir / "releases" / f"{release}.md": to_markdown(scan),
                     out_dir / "releases" / f"{release}.json": json.dumps(to_json(scan), indent=2) + "\n"})
    if not failures:
        write_atomic(out_dir / "matrix.md", matrix_markdown(scans))
    return scans, failures


def runner_cell(scan: ScanResult, platform: str) -> str:
    """The runner an engine on `platform` builds for Qwen2 (ESamp's first architecture), and whether it is bound."""
    verdict = next((v for v in scan.verdicts if v.platform == platform), None)
    if verdict is None:
        return "**unknown rule**"
    return verdict.runner.upper() + ("" if scan.plan.bound(verdict.runner) else " **UNBOUND**")


def matrix_markdown(scans: list[ScanResult]) -> str:
    surfaces = [s for s in SURFACES if len(s.contracts) > 1 or s.required]
    lines = [
        "# driftcheck matrix: ESamp surfaces across vLLM releases",
        "",
        "Each cell is the contract the static scan matched (see driftcheck/contracts/catalog.py);",
        "**UNKNOWN**/**MISSING** are unhandled drifts. Produced by `driftcheck matrix`.",
        "The runner columns say which model runner a CUDA / CPU engine builds for Qwen2ForCausalLM",
        "(VLLM_USE_V2_MODEL_RUNNER unset), and whether driftcheck binds every hook of it; V2 bound",
        "says whether Model Runner V2 (where the release has it) is bound when chosen.",
        "",
        "| release | fingerprint | unhandled | CUDA runner | CPU runner | V2 bound | "
        + " | ".join(f"`{s.id}`" for s in surfaces) + " |",
        "|---|---|---|---|---|---|" + "---|" * len(surfaces),
    ]
    for scan in scans:
        by_id = {r.surface.id: r for r in scan.results}
        cells = []
        for s in surfaces:
            r = by_id.get(s.id)
            cells.append("-" if r is None else (r.contract.id.split("/", 1)[1] if r.contract else f"**{r.status}**"))
        v2 = "-" if "v2" not in scan.plan.runners else ("yes" if scan.plan.bound("v2") else "no")
        lines.append(
            f"| [{scan.version}](releases/{scan.version}.md) | `{scan.fingerprint.digest}` | "
            f"{len(scan.unhandled)} | {runner_cell(scan, 'cuda')} | {runner_cell(scan, 'cpu')} | {v2} | "
            + " | ".join(cells) + " |"
        )
    lines += ["", "Contracts:", ""]
    for s in SURFACES:
        for c in s.contracts:
            lines.append(f"- `{c.id}` ({s.id}, seen in {c.seen_in}): {c.summary}")
    return "\n".join(lines) + "\n"

