"""The `driftcheck` command line. Exit codes: see driftcheck/errors.py and the README."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from driftcheck.errors import EXIT_BAD_INPUT, DriftcheckError
from driftcheck.shims.hook_points import FAULTS


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
        from driftcheck.probes.stress_cli import problems, run_stress

        run_live(result)
        probes = run_stress({"seed": 0, "examples": 2})
        result.live["probes"] = {"passed": not problems(probes), "problems": problems(probes)[:10],
                                 "counters": probes.get("counters"), "returns": probes.get("returns"),
                                 "seconds": probes.get("seconds")}
        result.disagreements += [f"probe: {p}" for p in problems(probes)]
    if markdown_path:
        write_atomic(markdown_path, to_markdown(result))
    if as_json:
        click.echo(json.dumps(to_json(result), indent=2))
    else:
        print_table(result)
    sys.exit(result.exit_code)


@main.command()
@click.option("--shrink", is_flag=True, required=True, help="the decode-shrink smoke (the only stress so far)")
@click.option("--seed", default=0, show_default=True, help="hypothesis seed for the schedules")
@click.option("--examples", default=6, show_default=True, help="how many schedules to run")
@click.option("--multiproc/--inproc", default=False, show_default=True, help="engine core in its own process")
@click.option("--compiled", is_flag=True, help="torch.compile the model (default: eager)")
@click.option("--fault", type=click.Choice(FAULTS),
              help="reintroduce a known bug, to see the probes catch it")
@click.option("--esamp-beta", type=float, help="run with ESamp enabled at this β for every request")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def stress(shrink, seed, examples, multiproc, compiled, fault, esamp_beta, as_json) -> None:
    """Decode-shrink smoke on the tiny model with the shims and probes bound.

    Exit codes: 0 passed, 1 a probe failed (the message names it), 4 the engine did not run.
    """
    from driftcheck.probes.stress_cli import print_summary, problems, run_stress

    if examples < 1:
        raise DriftcheckError("--examples must be at least 1")
    result = run_stress({"seed": seed, "examples": examples, "multiproc": multiproc, "compiled": compiled,
                         "fault": fault, "esamp_beta": esamp_beta})
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        print_summary(result)
    sys.exit(1 if problems(result) else 0)


@main.command()
@click.option("--out", "out_path", default="reports/exploration.md", show_default=True,
              type=click.Path(dir_okay=False))
def explore(out_path) -> None:
    """ESamp on the tiny model at β 0, 0.4, 0.8: sample diversity and the distiller's loss."""
    import subprocess

    out_path = str(Path(out_path).resolve())
    proc = subprocess.run([sys.executable, "-m", "esamp.explore", out_path])
    sys.exit(0 if proc.returncode == 0 and Path(out_path).is_file() else 4)


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
