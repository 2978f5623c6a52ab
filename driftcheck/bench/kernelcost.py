"""The device time of ESamp's candidate kernels alone, no engine (`python -m driftcheck.bench.kernelcost`;
on the device: gpu_device.sh job `kernelcost:HIDDEN`), all in one run: the collect kernel at each tile and warp
count in CONFIGS; the fuse kernel at each tile and warp count in FUSE_CONFIGS (at β 0: the logits are rewritten
unchanged, so every call sees the same ones); the whole candidate pass (collect, fuse, tally: CandidatePass's
graph); and, as the baseline, a read of the same logits by PyTorch (`amax` over each row: every byte read once,
the floor any pass over them has).

The logits are a decode step's after vLLM's filter: [rows, vocab] fp32, -inf but at each row's candidates.
Three cases: "peaked" (2-15 candidates a row, as the peaked benchmark rows measure at 7B: median 4, p99 15;
k 16), "wide" (WIDE a row, 1,000: near-flat rows; k 1024) and "mixed" (R1's pattern: one row in 16 that wide,
the rest narrow, k 1024: `cases`). Before it is timed, every collect
configuration's counts and candidates are checked against PyTorch's reading of the same logits, and every fuse
configuration's logits_dist against the PyTorch product at the candidates; one that disagrees fails the run
(exit 1, the configuration named).

µs per call: median [min-max] over REPS repetitions of CALLS calls each, timed by CUDA events (on the CPU: a
smoke run in Triton's interpreter, timed on the host). A collect call includes zeroing its counts (one memset),
as the pass's own does."""

from __future__ import annotations

import statistics
import sys
import time

from driftcheck.bench import micro

REPS = 5
CALLS = 100
#: (tile columns, warps) of the collect kernel: esamp/kernels.py COLLECT_BLOCK, COLLECT_WARPS is one of them
CONFIGS = ((512, 4), (1024, 2), (1024, 4), (2048, 4), (4096, 4), (8192, 8))
#: (candidate tile, hidden tile, warps, programs a row: 0 = one per tile of k) of the fuse kernel: FUSE_BLOCK_K,
#: FUSE_BLOCK_H, FUSE_WARPS, FUSE_PROGRAMS is one of them
FUSE_CONFIGS = ((1, 4096, 4, 0), (1, 4096, 8, 0), (1, 2048, 4, 0), (1, 1024, 4, 0), (2, 2048, 4, 0), (4, 1024, 4, 0),
                (16, 256, 4, 0), (1, 4096, 4, 16), (1, 4096, 4, 64))
WIDE = 1000  # candidates a row in the wide case (--wide)


def cases(wide: int = WIDE) -> dict:
    """{case: (k, candidates a row, cycled over the rows)}. "mixed" is R1's pattern at 7B (median 2 candidates a row,
    mean 40-47): one row in 16 as wide as the wide case, the others narrow, and k set by the wide rows, as the
    sampler sets it from the largest recent count; most of the fuse's rows × k programs then find no candidate."""
    k_wide = max(16, 1 << (wide - 1).bit_length())
    return {"peaked": (16, (2, 4, 4, 4, 3, 8, 11, 15)), "wide": (k_wide, (wide,)),
            "mixed": (k_wide, (wide, 2, 4, 2, 3, 2, 2, 11, 2, 4, 2, 3, 2, 12, 2, 5))}


def _timer(device: str):
    import torch

    if torch.device(device).type != "cuda":
        def host(fn, calls):
            t = time.perf_counter()
            for _ in range(calls):
                fn()
            return (time.perf_counter() - t) / calls * 1e6
        return host

    def events(fn, calls):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) * 1e3 / calls
    return events


def _time(fn, timer, reps: int, calls: int) -> dict:
    fn()  # compiled and warm
    us = [timer(fn, calls) for _ in range(reps)]
    return {"us_median": statistics.median(us), "us_min": min(us), "us_max": max(us)}


def logits_for(rows: int, vocab: int, widths, device: str, seed: int = 0):
    """fp32 [rows, vocab], -inf but at widths[r % len(widths)] random columns of row r; and those counts."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    ref = torch.full((rows, vocab), float("-inf"))
    counts = torch.tensor([min(widths[r % len(widths)], vocab) for r in range(rows)], dtype=torch.int32)
    for r in range(rows):
        cols = torch.randperm(vocab, generator=gen)[: int(counts[r])]
        ref[r, cols] = torch.randn(len(cols), generator=gen)
    return ref.to(device), counts.to(device)


def check_collect(ref, counts, idx, values, found, k: int) -> str | None:
    """Why a collect's result disagrees with the logits (None: it agrees): the exact counts, and for each
    row with at most k candidates, the same columns with the same values."""
    import torch

    if not torch.equal(found.cpu(), counts.cpu()):
        return "counts differ"
    for r in range(ref.shape[0]):
        n = int(counts[r])
        if n > k:
            continue
        cols = idx[r, :n].cpu()
        want = torch.isfinite(ref[r]).nonzero().flatten().cpu()
        if not torch.equal(cols.sort().values, want) or not torch.equal(values[r, :n].cpu(), ref[r].cpu()[cols]):
            return f"row {r}: other candidates"
    return None


def check_fuse(ref, counts, idx, dist, weight, normed, k: int) -> str | None:
    """Why a fuse's logits_dist disagrees with normed · weight[idx] at each row's candidates (rows with at most
    k of them; within bf16 rounding: the kernel sums in another order), None where it agrees."""
    import torch

    for r in range(ref.shape[0]):
        n = int(counts[r])
        if n > k:
            continue
        cols = idx[r, :n]
        want = (weight[cols].float() @ normed[r].float()).to(weight.dtype).float()
        if not torch.allclose(dist[r, :n], want, rtol=2e-2, atol=2e-2):
            return f"row {r}: logits_dist differs from the product (largest gap {(dist[r, :n] - want).abs().max():.3g})"
    return None


def measure(hidden: int, rows: int, vocab: int, device: str = "cuda", reps: int = REPS, calls: int = CALLS,
            configs=CONFIGS, fuse_configs=FUSE_CONFIGS, wide: int = WIDE) -> dict:
    """{case: {name: µs}}; raises RuntimeError where a configuration's result disagrees with the logits."""
    import torch

    from esamp import kernels

    timer = _timer(device)
    gen = torch.Generator().manual_seed(1)
    weight = (torch.randn(vocab, hidden, generator=gen) * hidden ** -0.5).to(device, torch.bfloat16)
    normed = torch.randn(rows, hidden, generator=gen).to(device, torch.bfloat16)
    beta = torch.full((rows,), 0.8, device=device)
    temperature = torch.full((rows,), 0.8, device=device)
    out = {}
    for case, (k, widths) in cases(wide).items():
        ref, counts = logits_for(rows, vocab, widths, device)
        timed = {"read floor: torch.amax over each row": _time(lambda: ref.amax(dim=1), timer, reps, calls)}
        params = kernels.Params(kernels.C_SIZE, device)
        params.write((rows, ref.data_ptr(), ref.stride(0)))
        idx = torch.zeros(rows, k, dtype=torch.int64, device=device)
        values = torch.zeros(rows, k, dtype=torch.float32, device=device)
        found = torch.zeros(rows, dtype=torch.int32, device=device)
        for block, warps in configs:
            def collect(block=block, warps=warps):
                found.zero_()
                kernels._collect(params, vocab, idx, values, found, block, warps)

            collect()
            why = check_collect(ref, counts, idx, values, found, k)
            if why:
                raise RuntimeError(f"collect at tile {block}, {warps} warps: {why}")
            default = (block, warps) == (kernels.COLLECT_BLOCK, kernels.COLLECT_WARPS)
            timed[f"collect, tile {block}, {warps} warps{' (the default)' if default else ''}"] = \
                _time(collect, timer, reps, calls)
        found.zero_()
        kernels._collect(params, vocab, idx, values, found)
        zero = torch.zeros(rows, device=device)
        fparams = kernels.Params(kernels.C_SIZE, device)
        fparams.write((rows, ref.data_ptr(), ref.stride(0), zero.data_ptr(), temperature.data_ptr(), normed.data_ptr()))
        dist = torch.zeros(rows, k, dtype=torch.float32, device=device)
        for block_k, block_h, warps, programs in fuse_configs:
            def fuse(block_k=block_k, block_h=block_h, warps=warps, programs=programs):
                kernels._fuse(fparams, idx, found, weight, dist, block_k, block_h, warps, programs)

            name = f"tiles {block_k} × {block_h}, {warps} warps" + (f", {programs} programs a row" if programs else "")
            dist.zero_()
            fuse()
            why = check_fuse(ref, found, idx, dist, weight, normed, k)
            if why:
                raise RuntimeError(f"fuse at {name}: {why}")
            default = (block_k, block_h, warps, programs) == (kernels.FUSE_BLOCK_K, kernels.FUSE_BLOCK_H,
                                                              kernels.FUSE_WARPS, kernels.FUSE_PROGRAMS)
            timed[f"fuse at β 0, {name}{' (the default)' if default else ''}"] = _time(fuse, timer, reps, calls)
        cp = kernels.CandidatePass(rows, k, vocab, weight, kernels.new_totals(device), graphs=True)
        work = ref.clone()

        def candidate_pass():
            work.copy_(ref)  # the pass fuses in place: every call starts from the filtered logits
            cp.run(work, beta, temperature, normed)

        timed["logits copy alone (part of the next row)"] = _time(lambda: work.copy_(ref), timer, reps, calls)
        timed["candidate pass (collect, fuse, tally) + the copy"] = _time(candidate_pass, timer, reps, calls)
        out[case] = {"k": k, "widths": list(widths), "graph": cp.graph is not None, "us": timed}
    return out


def render(result: dict) -> str:
    lines = [f"## Device µs per call ({result['device']}, hidden {result['hidden']}, {result['rows']} rows, vocab "
             f"{result['vocab']}; median [min–max] of {result['reps']}×{result['calls']})\n"]
    for case, r in result["cases"].items():
        floor = r["us"]["read floor: torch.amax over each row"]["us_median"]
        lines += [f"### {case}: {r['widths']} candidates a row (cycled), k {r['k']}, pass captured: {r['graph']}\n",
                  "| kernel | µs | × the read floor |", "|---|---|---|"]
        for name, t in r["us"].items():
            lines.append(f"| {name} | {t['us_median']:.1f} [{t['us_min']:.1f}–{t['us_max']:.1f}] | "
                         f"{t['us_median'] / floor:.2f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = micro.parser(__doc__, 3584, CALLS)
    ap.add_argument("--reps", type=int, default=REPS)
    ap.add_argument("--wide", type=int, default=WIDE, help="candidates a row in the wide case")
    args = ap.parse_args(argv)
    if micro.unavailable("kernelcost", args.device):
        return 2
    try:
        timed = measure(args.hidden, args.rows, args.vocab, args.device, args.reps, args.calls, wide=args.wide)
    except RuntimeError as exc:
        print(f"driftcheck kernelcost: {exc}")
        return 1
    result = {"hidden": args.hidden, "rows": args.rows, "vocab": args.vocab, "device": args.device,
              "reps": args.reps, "calls": args.calls, "cases": timed}
    print(render(result))
    micro.save(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
