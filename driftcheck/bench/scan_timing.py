"""Static and live scan timings of the installed vLLM, each in a fresh interpreter."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

from driftcheck.bench.runner import machine


#: A static scan of the installed vLLM timed in a fresh interpreter, imports included (also used by
#: benchmarks/scan_speed.py); prints one JSON line.
STATIC_SCAN_CODE = """
import sys, time, json
t0 = time.perf_counter()
from driftcheck.scan import scan_tree
from driftcheck.readers.source_tree import locate_installed
result = scan_tree(locate_installed())
elapsed = time.perf_counter() - t0
print(json.dumps({"seconds": elapsed, "torch_imported": "torch" in sys.modules,
                  "vllm_imported": "vllm" in sys.modules, "unhandled": len(result.unhandled)}))
"""


def bench_scan(rounds: int) -> dict:
    """Static and live scan timings of the installed vLLM, each in a fresh interpreter."""
    static, live = [], []
    for _ in range(rounds):
        out = subprocess.run([sys.executable, "-c", STATIC_SCAN_CODE], capture_output=True, text=True, check=True)
        static.append(json.loads(out.stdout.strip().splitlines()[-1]))
    for _ in range(rounds):
        t = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "driftcheck", "scan", "--live", "--json"],
                             capture_output=True, text=True)
        live.append(time.perf_counter() - t)
        if out.returncode not in (0, 1):  # 1 = unhandled drift, still a complete scan
            raise RuntimeError(f"scan --live failed ({out.returncode}): {out.stderr.strip()[-300:]}")
    return {"label": "scan", "vllm": _installed_vllm(), "machine": machine("cpu"),
            "static_s": statistics.median(r["seconds"] for r in static), "static_rounds": rounds,
            "static_torch_imported": any(r["torch_imported"] for r in static),
            "live_s": statistics.median(live), "live_rounds": rounds}


def _installed_vllm() -> str:
    from driftcheck.readers.source_tree import locate_installed

    return locate_installed().version
