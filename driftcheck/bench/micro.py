"""What the no-engine device jobs share (hostcost.py: host µs per call; kernelcost.py: device µs per kernel):
their command line, their refusal where the kernels cannot run, and their JSON output."""

from __future__ import annotations

import argparse


def parser(doc: str, hidden: int, calls: int) -> argparse.ArgumentParser:
    """--hidden (default `hidden`), --rows, --vocab, --device, --calls (default `calls`), --json; the first line of
    `doc` as the description."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=hidden)
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=151936)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--calls", type=int, default=calls, help="calls per repetition")
    ap.add_argument("--json")
    return ap


def unavailable(tool: str, device: str) -> bool:
    """True (after one line saying why) where the kernels cannot run on `device`: CUDA asked for and absent, or
    another device without Triton's interpreter (TRITON_INTERPRET=1), or no device at all. The tool then exits 2."""
    import torch

    try:
        torch.device(device)
    except RuntimeError:
        print(f"driftcheck {tool}: {device!r} names no torch device (e.g. cuda, cuda:1, cpu)")
        return True
    if device.startswith("cuda"):
        if torch.cuda.is_available():
            return False
        print(f"driftcheck {tool}: no CUDA device here (--device cpu: a smoke run, Triton's interpreter)")
        return True
    from esamp import kernels

    if kernels.available_on(device):
        return False
    print(f"driftcheck {tool}: on {device} the kernels run only in Triton's interpreter: set TRITON_INTERPRET=1 "
          f"(and have Triton installed)")
    return True


def save(path: str | None, result: dict) -> None:
    """The result as JSON at `path` (none: nothing), written whole or not at all; on CUDA with the GPU's name
    (`machine`: the merge names it in the report's header)."""
    if path:
        import torch

        if str(result.get("device", "")).startswith("cuda") and torch.cuda.is_available():
            result = {**result, "machine": torch.cuda.get_device_name(torch.device(result["device"]))}
        import json
        from pathlib import Path

        from driftcheck.files import write_atomic

        write_atomic(Path(path), json.dumps(result, indent=1))
