"""The host cost of each of ESamp's per-step calls on CUDA, alone in a loop, no engine (`python -m
driftcheck.bench.hostcost`; on the device: gpu_device.sh job `hostcost:HIDDEN`).

µs per call: median [min-max] over REPS repetitions of CALLS calls each, perf_counter on the host; the
device is drained between repetitions, never inside one. Each call is timed twice: alone, and with a second
Python thread beside the loop that wakes every 0.5 ms and holds the GIL for 0.1 ms, as vLLM's async-output
thread does once a step: a call that releases the GIL (graph replays, copies) may then wait for it on return. Read against bench's
"ESamp host ms/step" (measured inside the engine, where that thread runs): how much of a step's host time
is the calls themselves."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time

REPS = 5
CALLS = 200


def _time(fn, sync) -> dict:
    reps = []
    for _ in range(REPS):
        sync()
        t = time.perf_counter()
        for _ in range(CALLS):
            fn()
        reps.append((time.perf_counter() - t) / CALLS * 1e6)
        sync()
    return {"us_median": statistics.median(reps), "us_min": min(reps), "us_max": max(reps)}


def measure(hidden: int, rows: int, vocab: int, device: str = "cuda") -> dict:
    import torch

    from esamp import kernels
    from esamp.config import ESampConfig
    from esamp.distiller import WARMUP_STEPS, OnlineDistiller

    sync = torch.cuda.synchronize
    gen = torch.Generator().manual_seed(0)
    tokens = rows + 16
    taps = [torch.randn(tokens, hidden, generator=gen).to(device, torch.bfloat16) for _ in range(2)]
    index = torch.arange(rows, device=device)
    c = ESampConfig()
    distiller = OnlineDistiller(hidden, int(c.width), float(c.lr), device=device, precision="bf16")
    for _ in range(WARMUP_STEPS + 2):  # eager steps, then the capture
        distiller.step_gathered(taps[0], taps[1], index, index, rows)
    if distiller.graph_error is not None or len(distiller.graphs) != 1:
        raise RuntimeError(f"the distiller step was not captured: {distiller.graph_error}")
    (graphs,) = distiller.graphs.values()
    out = {}
    out["python call (baseline)"] = _time(lambda: None, sync)
    out["torch op (a tensor slice)"] = _time(lambda: index[:rows], sync)

    def event():
        torch.cuda.Event().record()

    out["new CUDA event, recorded"] = _time(event, sync)
    loss = torch.zeros((), device=device)

    def loss_copy():  # the per-step loss copy before f842c2f
        host = torch.empty((), dtype=torch.float32, pin_memory=True)
        host.copy_(loss, non_blocking=True)
        torch.cuda.Event().record()

    out["pinned scalar + D2H copy + event (the loss copy before f842c2f)"] = _time(loss_copy, sync)
    params = kernels.Params(kernels.G_SIZE, device)
    values = iter(range(10 ** 9))
    out["Params.write, new values"] = _time(lambda: params.write((rows, next(values), 0)), sync)
    out["Params.write, the same values (skipped)"] = _time(lambda: params.write((rows, 1, 0)), sync)
    out["distiller step graph replay alone"] = _time(graphs.forward.replay, sync)
    out["distiller step (step_gathered, captured)"] = _time(
        lambda: distiller.step_gathered(taps[0], taps[1], index, index, rows), sync)
    weight = torch.randn(vocab, hidden, generator=gen).to(device, torch.bfloat16)
    logits = torch.full((rows, vocab), float("-inf"), device=device)
    logits[:, :4] = torch.randn(rows, 4, generator=gen).to(device)
    beta = torch.full((rows,), 0.8, device=device)
    temperature = torch.full((rows,), 0.8, device=device)
    normed = torch.randn(rows, hidden, generator=gen).to(device, torch.bfloat16)
    cp = kernels.CandidatePass(rows, 16, vocab, weight, kernels.new_totals(device), graphs=True)
    for _ in range(kernels.WARM_RUNS + 1):
        cp.run(logits, beta, temperature, normed)
    if cp.graph is None:
        raise RuntimeError(f"the candidate pass was not captured: {cp.graph_error}")
    out["candidate pass graph replay alone"] = _time(cp.graph.replay, sync)
    out["candidate pass (CandidatePass.run, captured)"] = _time(lambda: cp.run(logits, beta, temperature, normed),
                                                                sync)
    return out


class GilThread:
    """A thread that wakes every `period` s and holds the GIL for `hold` s (pure Python), until stopped."""

    def __init__(self, period: float = 5e-4, hold: float = 1e-4) -> None:
        self.period, self.hold, self.stop = period, hold, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(self.period):
            end = time.perf_counter() + self.hold
            while time.perf_counter() < end:
                pass

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=896)
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=151936)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("driftcheck hostcost: needs a CUDA device")
        return 2
    result = {"hidden": args.hidden, "rows": args.rows, "alone": measure(args.hidden, args.rows, args.vocab)}
    with GilThread():
        result["gil_thread"] = measure(args.hidden, args.rows, args.vocab)
    print(f"## Host µs per call (hidden {args.hidden}, {args.rows} rows; median [min–max] of {REPS}×{CALLS})\n")
    print("| call | alone | with a GIL-holding thread |\n|---|---|---|")
    for name, a in result["alone"].items():
        b = result["gil_thread"][name]
        print(f"| {name} | {a['us_median']:.1f} [{a['us_min']:.1f}–{a['us_max']:.1f}] | "
              f"{b['us_median']:.1f} [{b['us_min']:.1f}–{b['us_max']:.1f}] |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
