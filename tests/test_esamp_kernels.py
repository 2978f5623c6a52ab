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


def test_kernelcost_checks_every_configuration_before_timing_it(tmp_path):
    """The device job kernelcost:HIDDEN (driftcheck/bench/kernelcost.py), as a CPU smoke run: every collect and
    fuse configuration is timed in both cases, and only after its result matched the logits (the run exits 0
    only then); a wrong count, candidate or product is named; without a way to run the kernels it refuses."""
    pytest.importorskip("triton", reason="Triton not installed")
    import torch

    from driftcheck.bench import kernelcost

    env = {**os.environ, "TRITON_INTERPRET": "1"}
    out = tmp_path / "kernelcost.json"
    done = subprocess.run([sys.executable, "-m", "driftcheck.bench.kernelcost", "--device", "cpu", "--hidden", "32",
                           "--rows", "3", "--vocab", "4096", "--wide", "40", "--reps", "1", "--calls", "1",
                           "--json", str(out)],
                          capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    import json

    result = json.loads(out.read_text())
    assert set(result["cases"]) == set(kernelcost.cases())
    assert result["cases"]["wide"]["widths"] == [40] and result["cases"]["wide"]["k"] == 64
    assert result["cases"]["mixed"]["widths"][0] == 40 and result["cases"]["mixed"]["k"] == 64
    for case in result["cases"].values():
        for prefix, configs in (("collect", kernelcost.CONFIGS), ("fuse", kernelcost.FUSE_CONFIGS)):
            names = [name for name in case["us"] if name.startswith(prefix)]
            assert len(names) == len(configs)
            assert sum("(the default)" in name for name in names) == 1
        assert all(0 < t["us_min"] <= t["us_median"] <= t["us_max"] for t in case["us"].values())
    ref, counts = kernelcost.logits_for(3, 64, (2, 5, 70), "cpu")
    assert counts.tolist() == [2, 5, 64] and torch.isfinite(ref).sum(1).tolist() == [2, 5, 64]
    k = 8
    idx = torch.zeros(3, k, dtype=torch.int64)
    values = torch.zeros(3, k)
    for r in range(2):
        cols = torch.isfinite(ref[r]).nonzero().flatten()
        idx[r, : len(cols)], values[r, : len(cols)] = cols, ref[r, cols]
    assert kernelcost.check_collect(ref, counts, idx, values, counts.clone(), k) is None
    assert kernelcost.check_collect(ref, counts, idx, values, counts + 1, k) == "counts differ"
    idx[1, 0] = int(torch.isinf(ref[1]).nonzero()[0])  # a column that is no candidate
    assert kernelcost.check_collect(ref, counts, idx, values, counts.clone(), k) == "row 1: other candidates"
    weight = torch.randn(64, 16).to(torch.bfloat16)
    normed = torch.randn(3, 16).to(torch.bfloat16)
    dist = torch.zeros(3, k)
    for r in range(2):
        n = int(counts[r])
        dist[r, :n] = (weight[idx[r, :n]].float() @ normed[r].float()).to(torch.bfloat16).float()
    assert kernelcost.check_fuse(ref, counts, idx, dist, weight, normed, k) is None
    dist[1, 1] += 1.0
    assert kernelcost.check_fuse(ref, counts, idx, dist, weight, normed, k).startswith("row 1: logits_dist differs")
    # on the CPU without Triton's interpreter the kernels cannot run: one line, exit 2, no traceback
    bare = {key: v for key, v in os.environ.items() if key != "TRITON_INTERPRET"}
    refused = subprocess.run([sys.executable, "-m", "driftcheck.bench.kernelcost", "--device", "cpu"],
                             capture_output=True, text=True, env=bare, timeout=300, cwd=tmp_path)
    assert refused.returncode == 2 and "set TRITON_INTERPRET=1" in refused.stdout, refused.stdout + refused.stderr
    assert "Traceback" not in refused.stderr
    nowhere = subprocess.run([sys.executable, "-m", "driftcheck.bench.kernelcost", "--device", "gpu0"],
                             capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert nowhere.returncode == 2 and "names no torch device" in nowhere.stdout, nowhere.stdout + nowhere.stderr
    assert "Traceback" not in nowhere.stderr
