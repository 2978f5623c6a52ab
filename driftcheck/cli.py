"""The `driftcheck` command line. Exit codes: see driftcheck/errors.py and the README."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from driftcheck.errors import EXIT_BAD_INPUT, DriftcheckError


def _fail(exc: DriftcheckError) -> None:
    click.echo(f"driftcheck: error: {exc}", err=True)
    sys.exit(exc.exit_code)


class _Group(click.Group):
    """Every DriftcheckError ends as one line and its exit code, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except DriftcheckError as exc:
            _fail(exc)
        except KeyboardInterrupt:
            click.echo("driftcheck: interrupted", err=True)
            sys.exit(130)


@click.group(cls=_Group)
def main() -> None:
    """Tell what in the installed vLLM moved under ESamp."""


@main.command()
@click.option("--source", type=click.Path(file_okay=False), help="scan a vLLM source tree (DIR/vllm/...)")
@click.option("--wheel", type=click.Path(dir_okay=False), help="scan a vLLM wheel without installing it")
@click.option("--vllm-version", "release", help="fetch that release's wheel into the cache and scan it")
@click.option("--live", is_flag=True, help="also import the installed vLLM and run the tiny model on a real engine")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON instead of a table")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False), help="also write a Markdown report")
def scan(source, wheel, release, live, as_json, markdown_path) -> None:
    """Scan a vLLM for drift in the surfaces ESamp depends on.

    Exit codes: 0 nothing unhandled, 1 unhandled drift, 2 bad input,
    3 fetch failed (network), 4 live check failed.
    """
    from driftcheck.report import print_table, to_json, to_markdown, write_atomic
    from driftcheck.scan import scan_tree
    from driftcheck.source_tree import open_tree

    if live and (source or wheel or release):
        raise DriftcheckError("--live reads the installed vLLM; it cannot be combined with --source/--wheel/--vllm-version")
    tree = open_tree(source=source, wheel=wheel, release=release)
    result = scan_tree(tree)
    if live:
        from driftcheck.live_reader import run_live

        run_live(result)
    if markdown_path:
        write_atomic(markdown_path, to_markdown(result))
    if as_json:
        click.echo(json.dumps(to_json(result), indent=2))
    else:
        print_table(result)
    sys.exit(result.exit_code)


@main.command()
@click.option("--releases", help="comma-separated releases (default: every release 0.10.0-0.33.0)")
@click.option("--out", "out_dir", default="reports", show_default=True, type=click.Path(file_okay=False))
def matrix(releases, out_dir) -> None:
    """Scan many releases: a report per release and reports/matrix.md."""
    from rich.progress import Progress

    from driftcheck.matrix import run_matrix
    from driftcheck.releases import RELEASES

    chosen = [r.strip() for r in releases.split(",") if r.strip()] if releases else list(RELEASES)
    with Progress(transient=not sys.stderr.isatty()) as progress:
        task = progress.add_task("scanning releases", total=len(chosen))

        def step(release: str) -> None:
            progress.update(task, advance=1, description=f"scanned vLLM {release}")

        scans, failures = run_matrix(chosen, Path(out_dir), progress=step)
        progress.update(task, completed=len(chosen))
    for scan in scans:
        click.echo(f"{scan.version:>9}  {scan.fingerprint.digest}  unhandled={len(scan.unhandled)}")
    for release, why in failures.items():
        click.echo(f"{release:>9}  not scanned: {why}", err=True)
    click.echo(f"wrote {Path(out_dir) / 'matrix.md'} and {len(scans)} release reports")
    sys.exit(EXIT_BAD_INPUT if failures else 0)


if __name__ == "__main__":  # python -m driftcheck.cli
    main()
