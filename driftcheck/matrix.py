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
            scan = scan_tree(fetch_release(release))
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


def matrix_markdown(scans: list[ScanResult]) -> str:
    surfaces = [s for s in SURFACES if len(s.contracts) > 1 or s.required]
    lines = [
        "# driftcheck matrix: ESamp surfaces across vLLM releases",
        "",
        "Each cell is the contract the static scan matched (see driftcheck/catalog.py);",
        "**UNKNOWN**/**MISSING** are unhandled drifts. Produced by `driftcheck matrix`.",
        "",
        "| release | fingerprint | unhandled | " + " | ".join(f"`{s.id}`" for s in surfaces) + " |",
        "|---|---|---|" + "---|" * len(surfaces),
    ]
    for scan in scans:
        by_id = {r.surface.id: r for r in scan.results}
        cells = []
        for s in surfaces:
            r = by_id.get(s.id)
            cells.append("-" if r is None else (r.contract.id.split("/", 1)[1] if r.contract else f"**{r.status}**"))
        lines.append(
            f"| [{scan.version}](releases/{scan.version}.md) | `{scan.fingerprint.digest}` | "
            f"{len(scan.unhandled)} | " + " | ".join(cells) + " |"
        )
    lines += ["", "Contracts:", ""]
    for s in SURFACES:
        for c in s.contracts:
            lines.append(f"- `{c.id}` ({s.id}, seen in {c.seen_in}): {c.summary}")
    return "\n".join(lines) + "\n"

