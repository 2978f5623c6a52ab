"""The engine-core process killed (SIGKILL) in the middle of a stress run and of an ESamp run: the
command ends within seconds with the dead process named, one line, exit 4; no traceback; nothing
half-written in the report's folder; none of the run's processes left behind. (Before the watchdog,
probes/watchdog.py, the stress waited on the dead engine until its own 900 s timeout.)"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.engine


def _kill_engine_core_mid_run(proc: subprocess.Popen, tmp: Path, settle_s: float) -> tuple[int, float, list]:
    """Wait for the run's engine core to be serving (the run's temp folder, TMPDIR=tmp, holds the
    per-step stats or tapped rows it writes), let it work `settle_s` more, SIGKILL it; (pid, seconds
    the command took to end after the kill, the run's other processes at the kill)."""
    deadline = time.monotonic() + 240
    core = None
    while core is None or not (list(tmp.rglob("stats-*.json")) or list(tmp.rglob("rows-*.pt"))):
        assert proc.poll() is None, "the run ended before its engine core served"
        assert time.monotonic() < deadline, "no engine core served"
        for child in psutil.Process(proc.pid).children(recursive=True):
            try:
                if "EngineCore" in " ".join(child.cmdline()):
                    core = child
            except psutil.NoSuchProcess:
                pass
        time.sleep(0.5)
    time.sleep(settle_s)
    assert proc.poll() is None, "the run ended before the kill: give it more work"
    others = [p for p in psutil.Process(proc.pid).children(recursive=True) if p.pid != core.pid]
    core.kill()
    t0 = time.monotonic()
    proc.wait(timeout=120)
    return core.pid, time.monotonic() - t0, others


def _assert_gone(processes) -> None:
    time.sleep(1)
    alive = [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"left behind: {alive}"


# slow tier: the ESamp run's test below goes through the same engine-death path in the default suite; this one
# adds the stress command's own handling (it keeps the default suite under ~12 minutes on 2 cores)
@pytest.mark.slow
def test_stress_run_whose_engine_core_is_killed_ends_at_once(tmp_path):
    report = tmp_path / "reports" / "stress.md"
    report.parent.mkdir()
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "driftcheck", "stress", "--shrink", "--multiproc", "--examples", "40",
                             "--report", str(report)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path, env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "TMPDIR": str(tmp)})
    pid, took, others = _kill_engine_core_mid_run(proc, tmp, settle_s=3)
    out, err = proc.communicate()
    assert proc.returncode == 4, (out[-2000:], err[-2000:])
    assert took < 30
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"driftcheck: error: stress: engine process {pid} (VLLM::EngineCore")
    assert "while the run was in progress (in schedule s" in lines[0]
    assert "Traceback" not in out + err
    # the report says what happened, whole; nothing staged is left beside it
    text = report.read_text()
    assert text.startswith("# driftcheck stress --shrink") and "**FAILED**" in text and text.endswith("\n")
    assert f"engine process {pid}" in text
    assert sorted(p.name for p in report.parent.iterdir()) == ["stress.md"]
    left = [p.name for p in tmp.iterdir() if p.name.startswith("driftcheck-")]
    assert left == [], left  # the run's stats and rows folders went with it
    _assert_gone(others)


def test_esamp_run_whose_engine_core_is_killed_ends_at_once(tmp_path):
    import json

    options = {"multiproc": True, "probes": False, "esamp": {"enable": True}, "beta": 0.8, "rounds": 400}
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "driftcheck.probes.engine_run", json.dumps(options)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "TMPDIR": str(tmp)})
    pid, took, others = _kill_engine_core_mid_run(proc, tmp, settle_s=3)
    out, err = proc.communicate()
    assert proc.returncode == 4, err[-2000:]
    assert took < 30
    assert err.strip().splitlines()[-1].startswith(f"driftcheck: error: engine process {pid} (VLLM::EngineCore")
    assert "DRIFTCHECK_RUN" not in out
    _assert_gone(others)


def test_a_death_the_run_saw_first_is_reported_as_the_death():
    """vLLM's client can raise EngineDeadError before the watchdog's thread looks; the run then calls
    `check()`, which must report the death once (not the call's error), and nothing while all run."""
    from driftcheck.probes.watchdog import Watchdog

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        seen: list[str] = []
        dog = Watchdog(seen.append, interval=3600)  # its thread is never started: only check() looks
        dog.processes = [p for p in dog.processes if p.pid == child.pid]  # not this test process's other children
        assert len(dog.processes) == 1
        dog.check(grace=0)
        assert seen == []  # every engine process runs: the call's own error stands
        child.kill()
        dog.check(grace=5)
        assert len(seen) == 1 and seen[0].startswith(f"engine process {child.pid} (")
        assert "killed by signal 9 while the run was in progress" in seen[0]
        dog.check(grace=0)
        assert len(seen) == 1  # reported once, whoever looks again
    finally:
        child.kill()
        child.wait()
