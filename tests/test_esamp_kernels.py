"""The Triton candidate kernels (esamp/kernels.py) against the PyTorch reference, in Triton's
interpreter on the CPU (torch's CPU install brings Triton along; where it is missing, the test says
so by skipping). On the GPU device machine benchmarks/gpu_device.sh runs the same probe on CUDA
before any benchmark."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def test_triton_candidate_kernels_match_the_reference_path():
    pytest.importorskip("triton", reason="Triton not installed (the probe runs on the GPU device: benchmarks/gpu_device.sh)")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, "-m", "driftcheck.probes.kernel_check", "--device", "cpu"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert "kernel check passed" in done.stdout
    # the compile count is CUDA-only, and the probe says it did not count here rather than passing silently
    assert "compiles not counted: Triton compiles only on CUDA" in done.stdout


def test_hostcost_times_each_call_and_refuses_cuda_where_there_is_none(tmp_path):
    """The device job hostcost:HIDDEN (driftcheck/bench/hostcost.py), as a CPU smoke run: every call of the
    CPU's list is timed, alone and beside the GIL-holding thread; asking for CUDA here says so and exits 2."""
    pytest.importorskip("triton", reason="Triton not installed")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    out = tmp_path / "hostcost.json"
    done = subprocess.run([sys.executable, "-m", "driftcheck.bench.hostcost", "--device", "cpu", "--hidden", "32",
                           "--rows", "8", "--vocab", "512", "--calls", "2", "--json", str(out)],
                          capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    import json

    result = json.loads(out.read_text())
    want = {"python call (baseline)", "torch op (a tensor slice)", "Params.write, new values",
            "Params.write, the same values (skipped)", "distiller step (step_gathered)",
            "candidate pass (CandidatePass.run)"}
    for run in ("alone", "gil_thread"):
        assert set(result[run]) == want
        assert all(0 < t["us_min"] <= t["us_median"] <= t["us_max"] for t in result[run].values())
    cuda = subprocess.run([sys.executable, "-m", "driftcheck.bench.hostcost"], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert cuda.returncode == 2 and "no CUDA device here" in cuda.stdout
