"""Static scan speed of the installed vLLM, against a baseline in the same run.

Baseline: parse every file the scan reads whole with libcst (what a naive
reader does). Measured: the real static scan (lexical index + libcst on the
slices). Each runs in a fresh interpreter, so imports count; the scan's
interpreter also checks that torch (and vllm) were never imported.

usage: python benchmarks/scan_speed.py [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

from driftcheck.bench.scan_timing import STATIC_SCAN_CODE as SCAN

NAIVE = """
import time, json
t0 = time.perf_counter()
import libcst
from driftcheck.scan import scan_tree
from driftcheck.readers.source_tree import locate_installed
tree = locate_installed()
scan_tree(tree)  # only to learn which files a scan reads
files = [rel for rel, text in tree._cache.items() if text is not None]
t0 = time.perf_counter()
for rel in files:
    libcst.parse_module(tree._cache[rel])
print(json.dumps({"seconds": time.perf_counter() - t0, "files": len(files)}))
"""


def run(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    scans, naive = [], []
    for _ in range(args.rounds):  # alternate, so drift in machine load hits both
        naive.append(run(NAIVE))
        scans.append(run(SCAN))
    scan_s = statistics.median(r["seconds"] for r in scans)
    naive_s = statistics.median(r["seconds"] for r in naive)
    rounds = ", ".join(f"{r['seconds']:.3f}" for r in scans)
    print(f"static scan (fresh interpreter, imports included): median {scan_s:.3f} s over {args.rounds} rounds "
          f"[{rounds}]")
    print(f"baseline: whole-file libcst parse of the same {naive[0]['files']} files (parse only): "
          f"median {naive_s:.3f} s")
    print(f"ratio scan/baseline: {scan_s / naive_s:.2f}x")
    print(f"torch imported by the scan: {any(r['torch_imported'] for r in scans)}; "
          f"vllm imported: {any(r['vllm_imported'] for r in scans)}")
    ok = scan_s < 1.0 and not any(r["torch_imported"] or r["vllm_imported"] for r in scans)
    print("goal (< 1 s, no torch): " + ("met" if ok else "NOT met"))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
