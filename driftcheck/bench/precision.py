"""The distiller's precision and its captured step, measured apart from vLLM:

- loss curves: one fp32 and one bf16 distiller (same seed, same stream of rows) trained online, the
  way ESamp trains (one Adam step per engine step, 256 rows); the rows are synthetic, shaped like a
  residual stream (a few outlier dimensions ~30× the rest, the deep state = the shallow one plus a
  nonlinear function of it, slowly drifting), since no trained model of the 7B shape runs here;
- step time: the device time of one step, eager and captured (esamp/distiller.py StepGraphs), with the
  model's final norm of the prediction as the engine's step has it (probes/kernel_check.py `RMSNormPost`), in
  each precision (bf16 also in PyTorch instead of the fused step of esamp/step_kernels.py, and fused with the
  norm as a module call instead of in its kernel: `STEP_VARIANTS`), by CUDA events around 50 steps after a
  warm-up, median of 5 repeats, in the caller's stream order
  (`side_stream=False`: the events then enclose the step's work; on the side stream, ESamp's default,
  they would time only the host's launches);
- kernels: where the default step's time goes (bf16, captured on CUDA), by kernel, from torch.profiler
  over 20 steps: device µs a step per kernel and the kernels a step runs (on the CPU, the ops' host time).

    python -m driftcheck.bench.precision --device cuda --hidden 3584 --json OUT.json

Prints markdown tables; exit 1 if bf16's loss over the last window is more than 5 % above fp32's, or if the
kernel breakdown failed (named in the output and the JSON; the other tables are kept)."""

from __future__ import annotations

import argparse
import json
import statistics
import sys

from driftcheck.probes.kernel_check import RMSNormPost

TOLERANCE = 1.05  # bf16's final-window loss may be at most 5 % above fp32's


def stream(hidden: int, rows: int, steps: int, device, seed: int = 0):
    """(shallow, deep) pairs in bf16 (the taps' dtype), step by step."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    scale = torch.ones(hidden)
    scale[torch.randperm(hidden, generator=gen)[:4]] = 30.0  # massive activations
    inner = 4 * 256
    a = (torch.randn(inner, hidden, generator=gen) * hidden ** -0.5).to(device)
    b = (torch.randn(hidden, inner, generator=gen) * inner ** -0.5).to(device)
    drift = (torch.randn(inner, hidden, generator=gen) * hidden ** -0.5 * 0.01).to(device)
    scale = scale.to(device)
    for t in range(steps):
        x = torch.randn(rows, hidden, generator=gen).to(device) * scale
        y = x + torch.nn.functional.gelu(x @ (a + t * drift / steps).t()) @ b.t() + 0.1 * torch.randn(
            rows, hidden, generator=gen).to(device)
        yield x.bfloat16(), y.bfloat16()


def loss_curves(hidden: int, width: int, rows: int, steps: int, device) -> dict:
    from esamp.distiller import OnlineDistiller

    out = {}
    for precision in ("fp32", "bf16"):
        d = OnlineDistiller(hidden, width, 1e-3, seed=0, device=device, precision=precision)
        # each step's loss read before the next step (a captured step's loss is its graph's output)
        out[precision] = [d.train_step(x, y) for x, y in stream(hidden, rows, steps, device)]
    return out


#: step_times' variants: (name, precision, fused step, the final norm in its kernel)
STEP_VARIANTS = (("fp32", "fp32", False, False), ("bf16-torch", "bf16", False, False),
                 ("bf16-fused-module-norm", "bf16", True, False), ("bf16", "bf16", True, True))


def step_times(hidden: int, width: int, rows: int, device) -> dict:
    """Device ms per step in the caller's stream order, eager and captured, each with the model's final norm of the
    prediction as the engine's step has it (probes/kernel_check.py `RMSNormPost`): fp32; bf16 with the PyTorch
    path ("bf16-torch"); the fused step (esamp/step_kernels.py) with the norm as a module call
    ("bf16-fused-module-norm") and in its head kernel ("bf16", the default)."""
    import torch

    from esamp.distiller import OnlineDistiller

    times = {}
    x, y = next(stream(hidden, rows, 1, device, seed=1))
    for name, precision, fused, kernel_norm in STEP_VARIANTS:
        post = RMSNormPost(hidden, device, kernel=kernel_norm)
        for graphs in (False, True):
            # in order: the events on this stream enclose the step's work (beside it, they would not)
            d = OnlineDistiller(hidden, width, 1e-3, seed=0, device=device, precision=precision, graphs=graphs,
                                side_stream=False)
            if fused and not d.fused:
                continue  # Triton unavailable (or ESAMP_TRITON=0): no such row
            d.fused = fused
            for _ in range(10):
                d.step(x, y, post)
            reps = []
            for _ in range(5):
                torch.cuda.synchronize()
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                for _ in range(50):
                    d.step(x, y, post)
                end.record()
                end.synchronize()
                reps.append(start.elapsed_time(end) / 50)
            times[f"{name}-{'graphs' if graphs else 'eager'}"] = {
                "ms_median": statistics.median(reps), "ms_min": min(reps), "ms_max": max(reps),
                "graph_error": d.graph_error, "norm": d.norm_path}
    return times


def kernel_breakdown(hidden: int, width: int, rows: int, device, steps: int = 20, top: int = 12) -> dict:
    """Where the default step's time goes (esamp/distiller.py OnlineDistiller as ESamp builds it: bf16 on
    CUDA, captured once warm; in the caller's stream order so that the profile's steps are whole): torch.profiler
    over `steps` steps after a warm-up. `step` copies the rows into the captured step's buffers (two copies
    outside the graph); in the engine the graph gathers them from the taps itself (`step_gathered`).
    Returns {"unit": "device µs" | "host µs", "what": "kernels" | "ops", "steps", "graphed_steps" (of the
    profiled ones), "per_step_us", "kernels_per_step", "top": [(name, µs a step, calls a step)]}: on CUDA the
    kernels' device time (inside the captured graphs too), on the CPU the ops' own host time."""
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    from esamp.distiller import OnlineDistiller

    on_cuda = torch.device(device).type == "cuda"
    x, y = next(stream(hidden, rows, 1, device, seed=1))
    d = OnlineDistiller(hidden, width, 1e-3, seed=0, device=device, side_stream=False)
    post = RMSNormPost(hidden, device)
    for _ in range(10):  # past the warm-up: captured where CUDA is
        d.step(x, y, post)
    if on_cuda:
        torch.cuda.synchronize()
    graphed = d.graph_steps
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])) as prof:
        for _ in range(steps):
            d.step(x, y, post)
        if on_cuda:
            torch.cuda.synchronize()
    want = DeviceType.CUDA if on_cuda else DeviceType.CPU
    spent = []
    for e in prof.key_averages():
        if e.device_type != want:
            continue
        us = e.self_device_time_total if on_cuda else e.self_cpu_time_total
        if us > 0:
            spent.append((e.key, us / steps, e.count / steps))
    spent.sort(key=lambda r: -r[1])
    return {"unit": "device µs" if on_cuda else "host µs", "what": "kernels" if on_cuda else "ops",
            "steps": steps, "graphed_steps": d.graph_steps - graphed, "norm": d.norm_path,  # of the profiled steps
            "per_step_us": sum(r[1] for r in spent), "kernels_per_step": sum(r[2] for r in spent),
            "top": [(name[:80], round(us, 2), round(calls, 2)) for name, us, calls in spent[:top]]}


def window(values, lo, hi):
    part = values[lo:hi]
    return sum(part) / len(part)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--hidden", type=int, default=3584)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    curves = loss_curves(args.hidden, args.width, args.rows, args.steps, args.device)
    n = args.steps
    windows = [(0, 20), (n // 4, n // 4 + 20), (n // 2, n // 2 + 20), (n - 20, n)]
    print(f"## Distiller precision (hidden {args.hidden}, width {args.width}, {args.rows} rows, {n} steps, "
          f"{args.device})\n")
    print("| steps | fp32 loss | bf16 loss | bf16 / fp32 |\n|---|---|---|---|")
    ratios = []
    for lo, hi in windows:
        f, b = window(curves["fp32"], lo, hi), window(curves["bf16"], lo, hi)
        ratios.append(b / f)
        print(f"| {lo}-{hi} | {f:.4g} | {b:.4g} | {b / f:.4f} |")
    result = {"hidden": args.hidden, "width": args.width, "rows": args.rows, "steps": n, "curves": curves,
              "windows": windows, "ratios": ratios}
    if args.device.startswith("cuda"):
        import torch

        result["machine"] = torch.cuda.get_device_name(torch.device(args.device))
        result["step_ms"] = step_times(args.hidden, args.width, args.rows, args.device)
        print("\n| step | device ms median [min–max] | final norm | capture error |\n|---|---|---|---|")
        for name, t in result["step_ms"].items():
            print(f"| {name} | {t['ms_median']:.4f} [{t['ms_min']:.4f}–{t['ms_max']:.4f}] | {t['norm'] or '-'} "
                  f"| {t['graph_error'] or '-'} |")
    try:  # the profiler over captured graphs is the device's to support: the tables above are kept either way
        result["kernels"] = kernels = kernel_breakdown(args.hidden, args.width, args.rows, args.device)
    except Exception as exc:  # noqa: BLE001 - named in the output and the JSON, never silently dropped
        result["kernels"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        print(f"\nkernel breakdown failed: {result['kernels']['error']}")
        kernels = None
    if kernels is not None:
        print(f"\n### Where the default step's time goes ({kernels['unit']} a step, {kernels['steps']} steps "
              f"profiled, {kernels['graphed_steps']} captured): {kernels['per_step_us']:.1f} in "
              f"{kernels['kernels_per_step']:.1f} {kernels['what']}\n\n"
              f"| {kernels['what'][:-1]} | µs a step | calls a step |\n|---|---|---|")
        for name, us, calls in kernels["top"]:
            print(f"| `{name.replace('|', '/')}` | {us:.2f} | {calls:g} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh)
    ok = ratios[-1] <= TOLERANCE
    print(f"\nbf16's last-window loss is {ratios[-1]:.4f}× fp32's ({'within' if ok else 'OUTSIDE'} the "
          f"{TOLERANCE:.2f}× tolerance)")
    return 0 if ok and kernels is not None else 1


if __name__ == "__main__":
    sys.exit(main())
