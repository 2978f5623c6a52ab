"""The host cost of each of ESamp's per-step calls on CUDA, alone in a loop, no engine (`python -m
driftcheck.bench.hostcost`; on the device: gpu_device.sh job `hostcost:HIDDEN`).

µs per call: median [min-max] over REPS repetitions of CALLS calls each, perf_counter on the host; the
device is drained between repetitions, never inside one. Each call is timed twice: alone, and with a second
Python thread beside the loop that wakes every 0.5 ms and holds the GIL for 0.1 ms, as vLLM's async-output
thread does once a step: a call that releases the GIL (graph replays, copies) may then wait for it on return. Read against bench's
"ESamp host ms/step" (measured inside the engine, where that thread runs): how much of a step's host time
is the calls themselves."""

from __future__ import annotations

import statistics
import sys
import threading
import time

from driftcheck.bench import micro

REPS = 5
CALLS = 200


def _time(fn, sync, calls: int = CALLS) -> dict:
    reps = []
    for _ in range(REPS):
        sync()
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        reps.append((time.perf_counter() - t) / calls * 1e6)
        sync()
    return {"us_median": statistics.median(reps), "us_min": min(reps), "us_max": max(reps)}


class NotCaptured(RuntimeError):
    """A step or pass that should have been captured on CUDA was not: the job has nothing to time."""


def measure(hidden: int, rows: int, vocab: int, device: str = "cuda", calls: int = CALLS) -> dict:
    """{call: µs} for each call. On the CPU (a smoke run: Triton's interpreter for the kernels) the calls
    that exist only on CUDA (events, pinned copies, graph replays) are left out and the steps run eagerly."""
    import torch

    from esamp import kernels, step_kernels
    from esamp.config import ESampConfig
    from esamp.distiller import WARMUP_STEPS, OnlineDistiller

    cuda = torch.device(device).type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    gen = torch.Generator().manual_seed(0)
    tokens = rows + 16
    taps = [torch.randn(tokens, hidden, generator=gen).to(device, torch.bfloat16) for _ in range(2)]
    index = torch.arange(rows, device=device)
    c = ESampConfig()
    distiller = OnlineDistiller(hidden, int(c.width), float(c.lr), device=device, precision="bf16")
    for _ in range(WARMUP_STEPS + 2):  # eager steps, then (CUDA) the capture
        distiller.step_gathered(taps[0], taps[1], index, index, rows)
    if cuda and (distiller.graph_error is not None or len(distiller.graphs) != 1):
        why = distiller.graph_error or ("ESAMP_GRAPHS=0" if not distiller.graphs_on else "no graph for the step")
        raise NotCaptured(f"the distiller step was not captured: {why}")
    out = {}

    def timed(name, fn):
        out[name] = _time(fn, sync, calls)

    timed("python call (baseline)", lambda: None)
    timed("torch op (a tensor slice)", lambda: index[:rows])
    if cuda:
        loss = torch.zeros((), device=device)

        def loss_copy():  # the per-step loss copy before f842c2f
            host = torch.empty((), dtype=torch.float32, pin_memory=True)
            host.copy_(loss, non_blocking=True)
            torch.cuda.Event().record()

        timed("new CUDA event, recorded", lambda: torch.cuda.Event().record())
        reused = torch.cuda.Event()
        timed("one CUDA event, recorded again (the distiller's two, from 135e14b)", reused.record)
        timed("pinned scalar + D2H copy + event (the loss copy before f842c2f)", loss_copy)
    params = kernels.Params(step_kernels.G_SIZE, device)
    values = iter(range(1, 10 ** 9))
    timed("Params.write, new values", lambda: params.write((rows, next(values), 0)))
    timed("Params.write, the same values (skipped)", lambda: params.write((rows, 0, 0)))
    if cuda:
        (graphs,) = distiller.graphs.values()
        timed("distiller step graph replay alone", graphs.forward.replay)
        timed("side stream waits for the caller: Stream.wait_stream (a new event)",
              lambda: distiller.stream.wait_stream(torch.cuda.current_stream()))
        timed("side stream waits for the caller: one event recorded again (_wait_caller)", distiller._wait_caller)
    timed("distiller step (step_gathered)", lambda: distiller.step_gathered(taps[0], taps[1], index, index, rows))
    if cuda:  # defer_update: the update's graph replayed by a second call, once the sampler queued its draw
        deferred = OnlineDistiller(hidden, int(c.width), float(c.lr), device=device, precision="bf16",
                                   defer_update=True)

        def deferred_step():
            deferred.step_gathered(taps[0], taps[1], index, index, rows)
            deferred.flush()

        for _ in range(WARMUP_STEPS + 2):
            deferred_step()
        timed("distiller step, update deferred (step_gathered, then flush)", deferred_step)
    weight = torch.randn(vocab, hidden, generator=gen).to(device, torch.bfloat16)
    logits = torch.full((rows, vocab), float("-inf"), device=device)
    logits[:, :4] = torch.randn(rows, 4, generator=gen).to(device)
    beta = torch.full((rows,), 0.8, device=device)
    temperature = torch.full((rows,), 0.8, device=device)
    normed = torch.randn(rows, hidden, generator=gen).to(device, torch.bfloat16)
    cp = kernels.CandidatePass(rows, 16, vocab, weight, kernels.new_totals(device), graphs=True)
    for _ in range(kernels.WARM_RUNS + 1):
        cp.run(logits, beta, temperature, normed)
    if cuda:
        if cp.graph is None:
            raise NotCaptured(f"the candidate pass was not captured: {cp.graph_error}")
        timed("candidate pass graph replay alone", cp.graph.replay)
    timed("candidate pass (CandidatePass.run)", lambda: cp.run(logits, beta, temperature, normed))
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
    ap = micro.parser(__doc__, 896, CALLS)
    args = ap.parse_args(argv)
    if micro.unavailable("hostcost", args.device):
        return 2
    run = lambda: measure(args.hidden, args.rows, args.vocab, args.device, args.calls)  # noqa: E731
    try:
        result = {"hidden": args.hidden, "rows": args.rows, "device": args.device, "alone": run()}
        with GilThread():
            result["gil_thread"] = run()
    except NotCaptured as exc:  # nothing captured to time (any other error keeps its traceback)
        print(f"hostcost: {exc}", file=sys.stderr)
        return 1
    print(f"## Host µs per call ({args.device}, hidden {args.hidden}, {args.rows} rows; median [min–max] of "
          f"{REPS}×{args.calls})\n")
    print("| call | alone | with a GIL-holding thread |\n|---|---|---|")
    for name, a in result["alone"].items():
        b = result["gil_thread"][name]
        print(f"| {name} | {a['us_median']:.1f} [{a['us_min']:.1f}–{a['us_max']:.1f}] | "
              f"{b['us_median']:.1f} [{b['us_min']:.1f}–{b['us_max']:.1f}] |")
    micro.save(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
