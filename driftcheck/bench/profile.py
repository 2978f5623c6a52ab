"""Where one benchmark round's time goes: the top operators by self time (host and device), the
named ranges of the shims and of ESamp (shims/hook_points.py `span`), the round's total device time,
and its timeline (`timeline`): how long the device was busy and idle, and how much of that idle
time fell inside each named host range — host work the device waited for, i.e. on the critical path."""

from __future__ import annotations

import bisect
import json
import os
import tempfile
import time


def profile_round(fn, set_ranges=None) -> dict:
    """Profile fn() once. `set_ranges(bool)` turns the named ranges on for the round (the ESamp
    worker passes it; vanilla has none)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    if set_ranges:
        set_ranges(True)
    try:
        with profile(activities=activities) as prof:
            t = time.perf_counter()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            wall_ms = (time.perf_counter() - t) * 1e3
    finally:
        if set_ranges:
            set_ranges(False)
    with tempfile.TemporaryDirectory() as tmp:
        raw = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(raw)
        with open(raw) as f:
            events = json.load(f).get("traceEvents", [])
    rows = []
    for e in prof.key_averages():
        self_device = (getattr(e, "self_device_time_total", 0) or getattr(e, "self_cuda_time_total", 0)) / 1e3
        rows.append({"name": e.key, "calls": e.count, "self_cpu_ms": e.self_cpu_time_total / 1e3,
                     "self_device_ms": self_device})
    rows.sort(key=lambda r: -(r["self_device_ms"] or r["self_cpu_ms"]))
    return {"top": rows[:40], **summarize_rows(rows), "wall_ms": wall_ms, "timeline": timeline(events)}


HOST_KEEP_MS = 0.2  # functions with less self time in a host-profiled round are left out (unless ours)
OWN_PACKAGES = ("esamp", "shims", "adapters")  # all their functions are kept: their cumulative times say
# where ESamp's host time goes


def host_profile_round(fn) -> dict:
    """fn() once under cProfile (deterministic: every Python call and every call into C, such as torch's
    CUDA launches, copies and event records, is timed; its own overhead inflates Python-heavy code, so compare
    the two variants' rounds with each other, never with a timed round). Returns the round's wall ms and the
    functions with at least HOST_KEEP_MS of self time, and all of OWN_PACKAGES' (`fns`: "file:line(name)" ->
    [calls, self ms, cumulative ms]), file paths cut to the package (esamp/..., vllm/..., torch/...)."""
    import cProfile
    import pstats

    import torch

    prof = cProfile.Profile()
    t = time.perf_counter()
    prof.enable()
    try:
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    finally:
        prof.disable()
    wall_ms = (time.perf_counter() - t) * 1e3
    fns = {}
    for (file, line, name), (_, calls, self_s, cum_s, _) in pstats.Stats(prof).stats.items():
        key = f"{_package_path(file)}:{line}({name})"
        if self_s * 1e3 >= HOST_KEEP_MS or any(f"{pkg}/" in key for pkg in OWN_PACKAGES):
            fns[key] = [calls, self_s * 1e3, cum_s * 1e3]
    return {"wall_ms": wall_ms, "fns": fns}


def _package_path(file: str) -> str:
    """A profiled function's file from its package on: where the last of site-packages/, the bundle's
    tree, or the repository's top-level packages begins ('~' for built-ins)."""
    if file == "~":
        return file
    parts = file.replace(os.sep, "/").split("/")
    roots = ("esamp", "shims", "probes", "adapters", "driftcheck", "vllm", "torch", "triton")
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] in ("site-packages", "dist-packages"):
            return "/".join(parts[i + 1:])
    for i, part in enumerate(parts):
        if part in roots:
            return "/".join(parts[i:])
    return "/".join(parts[-2:])


def host_summary(profiles: dict, limit: int = 25) -> dict:
    """From the two workers' host-profiled rounds: their wall ms; `grown`, the functions whose self time grew
    most from vanilla's round to ESamp's ([function, ESamp calls, ESamp self ms, vanilla self ms], largest
    growth first); `own`, ESamp's and the shims' functions by cumulative time ([function, calls, self ms,
    cumulative ms])."""
    fns = {w: p["fns"] for w, p in profiles.items()}
    grown = [[name, calls, self_ms, fns["vanilla"].get(name, [0, 0.0, 0.0])[1]]
             for name, (calls, self_ms, _) in fns["esamp"].items()]
    grown = sorted([g for g in grown if g[2] > g[3]], key=lambda g: g[3] - g[2])[:limit]
    own = sorted([[name, *v] for name, v in fns["esamp"].items() if any(f"{pkg}/" in name for pkg in OWN_PACKAGES)],
                 key=lambda r: -r[3])[:limit]
    return {"wall_ms": {w: p["wall_ms"] for w, p in profiles.items()}, "grown": grown, "own": own}


def summarize_rows(rows: list[dict]) -> dict:
    """ESamp's ranges and the round's device total from the operator rows. A named range shows twice:
    as a host range (its host time, children included) and as a device annotation (the span of the
    device timeline its kernels covered: an upper bound, other streams' kernels may run inside it).
    Annotations are left out of the device total, which sums kernels."""
    ranges, device_ms = {}, 0.0
    for r in rows:
        if r["name"].startswith("esamp."):
            entry = ranges.setdefault(r["name"], {"calls": r["calls"], "host_ms": 0.0, "device_ms": 0.0})
            entry["host_ms"] = max(entry["host_ms"], r["self_cpu_ms"])
            entry["device_ms"] = max(entry["device_ms"], r["self_device_ms"])
        else:
            device_ms += r["self_device_ms"]
    return {"ranges": dict(sorted(ranges.items())), "device_ms": device_ms}


DEVICE_CATS = ("kernel", "gpu_memcpy", "gpu_memset")
HOST_CATS = ("cpu_op", "user_annotation", "cuda_runtime", "cuda_driver", "python_function")
RANGE_PREFIXES = ("esamp.", "hooks.")


def _union(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[list[float]] = []
    for start, end in sorted(intervals):
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [(a, b) for a, b in out]


def _overlap(spans: list[tuple[float, float]], starts: list[float], start: float, end: float) -> float:
    """Length of [start, end) inside the sorted, disjoint `spans` (`starts`: their start points)."""
    total, i = 0.0, max(bisect.bisect_right(starts, start) - 1, 0)
    while i < len(spans) and spans[i][0] < end:
        total += max(0.0, min(end, spans[i][1]) - max(start, spans[i][0]))
        i += 1
    return total


def timeline(events: list[dict]) -> dict:
    """From a Chrome trace's events (microseconds): the device's busy time (the union of every kernel,
    copy and fill, all streams), its idle time inside the profiled host window, and per named host range
    (esamp.*, hooks.*) its calls, host time and the device idle time inside it (ms). Idle time inside a
    host range is time the device waited for that host work: removing the work would shorten the round
    by about that much; busy time the range added shows in `busy_ms` against the vanilla round."""
    complete = [e for e in events if e.get("ph") == "X" and "ts" in e and "dur" in e]
    device = _union([(float(e["ts"]), float(e["ts"]) + float(e["dur"])) for e in complete
                     if e.get("cat") in DEVICE_CATS])
    host = [(float(e["ts"]), float(e["ts"]) + float(e["dur"])) for e in complete if e.get("cat") in HOST_CATS]
    if not host:
        return {"busy_ms": 0.0, "idle_ms": 0.0, "window_ms": 0.0, "ranges": {}}
    lo, hi = min(a for a, _ in host), max(b for _, b in host + device)
    busy = _union([(max(a, lo), min(b, hi)) for a, b in device if b > lo and a < hi])
    idle, at = [], lo
    for a, b in busy:
        if a > at:
            idle.append((at, a))
        at = max(at, b)
    if at < hi:
        idle.append((at, hi))
    starts = [a for a, _ in idle]
    ranges: dict[str, dict] = {}
    for e in complete:
        name = str(e.get("name", ""))
        if e.get("cat") != "user_annotation" or not name.startswith(RANGE_PREFIXES):
            continue
        a, b = float(e["ts"]), float(e["ts"]) + float(e["dur"])
        r = ranges.setdefault(name, {"calls": 0, "host_ms": 0.0, "device_idle_ms": 0.0})
        r["calls"] += 1
        r["host_ms"] += (b - a) / 1e3
        r["device_idle_ms"] += _overlap(idle, starts, a, b) / 1e3
    return {"busy_ms": sum(b - a for a, b in busy) / 1e3, "idle_ms": sum(b - a for a, b in idle) / 1e3,
            "window_ms": (hi - lo) / 1e3, "ranges": dict(sorted(ranges.items())),
            "idle_by_host_op": idle_by_host_op(idle, complete)}


def idle_by_host_op(idle: list[tuple[float, float]], complete: list[dict], top: int = 20) -> list[list]:
    """The device's idle time charged to what the host was doing meanwhile: each idle stretch split at
    host-event boundaries, each piece charged to the innermost host event covering it (the latest to
    start among the 400 events that started before the stretch ended; "(no host event)" where none of
    them covers it: plain Python between operators, or inside an event that started earlier than
    those): [name, ms] pairs, largest first."""
    host = sorted(((float(e["ts"]), float(e["ts"]) + float(e["dur"]), str(e.get("name", "?")))
                   for e in complete if e.get("cat") in HOST_CATS), key=lambda h: (h[0], -h[1]))
    starts = [h[0] for h in host]
    charged: dict[str, float] = {}
    # the events that start before a stretch ends and still run in it, among a bounded number of the latest
    for a, b in idle:
        i = bisect.bisect_left(starts, b)
        near = [h for h in host[max(0, i - 400):i] if h[1] > a]
        cuts = sorted({a, b, *(t for h in near for t in h[:2] if a < t < b)})
        for lo, hi in zip(cuts, cuts[1:]):
            mid = (lo + hi) / 2
            cover = [h for h in near if h[0] <= mid < h[1]]
            name = max(cover, key=lambda h: (h[0], -h[1]))[2] if cover else "(no host event)"
            charged[name] = charged.get(name, 0.0) + (hi - lo) / 1e3
    return [[name, ms] for name, ms in sorted(charged.items(), key=lambda kv: -kv[1])[:top]]


def components(profiles: dict) -> dict:
    """The report's component table from the two workers' profiles."""
    out = {"ranges": profiles["esamp"]["ranges"],
           "device_ms": {w: p["device_ms"] for w, p in profiles.items()},
           "wall_ms": {w: p["wall_ms"] for w, p in profiles.items()}}
    if all("timeline" in p for p in profiles.values()):
        out["timeline"] = {w: p["timeline"] for w, p in profiles.items()}
    return out


PLACEMENTS = 3  # copies of each kept filter input, at different device addresses, each timed alone


def filter_replay(run, every: int, samples: int = 8, reps: int = 10) -> dict:
    """vLLM's own top-k/top-p filter (V1: `vllm.v1.sample.ops.topk_topp_sampler.apply_top_k_top_p`, which
    both variants call once per step with a k or p to apply) on the inputs it got during one round,
    `run()`: a copy of every `every`-th such call's input, up to `samples`, each then timed alone (median
    of `reps`; CUDA events on a GPU, the variant's engine idle), in PLACEMENTS copies at different device
    addresses. On CUDA every such call is also timed where it ran, in the round. Together they say where
    a variant's filter time comes from: its inputs (the kernel's passes depend on the logits: alone,
    one variant's inputs against the other's), where its tensors lie (alone, one copy against another:
    the same inputs), or its context in the round (the same call in the round against alone). Also the
    finite logits per row it got (min_p's survivors; the vocabulary where nothing masked them)."""
    import statistics
    import time

    import torch
    from vllm.v1.sample.ops import topk_topp_sampler as tt

    original = tt.apply_top_k_top_p
    kept, calls, in_round = [], 0, []

    def capture(logits, k, p):
        nonlocal calls
        if k is None and p is None:  # nothing to filter (ESamp's shim draws through vLLM with k = p = None)
            return original(logits, k, p)
        calls += 1
        if calls % every == 0 and len(kept) < samples:
            room = True
            if logits.is_cuda:  # room for the copy and the timed copies beside the engine's memory
                need = (PLACEMENTS + 2) * logits.numel() * logits.element_size()
                room = torch.cuda.mem_get_info(logits.device)[0] > need
            if room:
                kept.append((calls - 1, *(None if t is None else t.clone() for t in (logits, k, p))))
        if not logits.is_cuda:
            return original(logits, k, p)
        # the same call timed where it ran, in the round (events on its stream: read after the round)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = original(logits, k, p)
        end.record()
        in_round.append((start, end))
        return out

    tt.apply_top_k_top_p = capture
    try:
        run()
    finally:
        tt.apply_top_k_top_p = original
    if in_round:
        in_round[-1][1].synchronize()
        in_round = [start.elapsed_time(end) for start, end in in_round]
    if not kept:
        return {"calls": calls, "error": f"no input captured in {calls} calls of vLLM's apply_top_k_top_p "
                                            "(not the V1 sampler, or another process ran it?)"}

    def timed(x, source, k, p) -> float:
        times = []
        for i in range(reps + 2):  # the first two warm up
            x.copy_(source)  # the filter works in place: the same input each time, at the same address
            if x.is_cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                original(x, k, p)
                end.record()
                end.synchronize()
                elapsed = start.elapsed_time(end)
            else:
                t = time.perf_counter()
                original(x, k, p)
                elapsed = (time.perf_counter() - t) * 1e3
            if i >= 2:
                times.append(elapsed)
        return statistics.median(times)

    ms, by_placement, finite, rows = [], [], [], kept[0][1].shape[0]
    for _, logits, k, p in kept:
        copies = [torch.empty_like(logits) for _ in range(PLACEMENTS)]  # alive together: different addresses
        by_placement.append([timed(x, logits, k, p) for x in copies])
        ms.append(statistics.median(by_placement[-1]))
        finite.append(torch.isfinite(logits).sum(dim=-1).float().mean().item())
        del copies
    calls_kept = [call for call, *_ in kept]
    on_cuda = kept[0][1].is_cuda
    kept.clear()
    if on_cuda:
        torch.cuda.empty_cache()
    return {"calls": calls, "samples": len(ms), "ms": ms, "ms_median": statistics.median(ms),
            "ms_by_placement": by_placement, "finite_per_row": finite, "rows": rows,
            "in_round_ms_median": statistics.median(in_round) if in_round else None,
            "in_round_ms_range": [min(in_round), max(in_round)] if in_round else None,
            # the kept calls as they ran in the round, against their `ms` alone
            "in_round_ms_of_samples": [in_round[c] for c in calls_kept] if in_round else None,
            "in_round_ms": [round(x, 4) for x in in_round]}
