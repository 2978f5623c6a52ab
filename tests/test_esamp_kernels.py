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
