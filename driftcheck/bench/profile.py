"""Where one benchmark round's time goes: the top operators by self time (host and device), ESamp's
own named ranges (esamp/counters.py `span`), and the round's total device time."""

from __future__ import annotations

import time


def profile_round(fn, set_ranges=None) -> dict:
    """Profile fn() once. `set_ranges(bool)` turns ESamp's named ranges on for the round (the ESamp
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
    rows = []
    for e in prof.key_averages():
        self_device = (getattr(e, "self_device_time_total", 0) or getattr(e, "self_cuda_time_total", 0)) / 1e3
        rows.append({"name": e.key, "calls": e.count, "self_cpu_ms": e.self_cpu_time_total / 1e3,
                     "self_device_ms": self_device})
    rows.sort(key=lambda r: -(r["self_device_ms"] or r["self_cpu_ms"]))
    return {"top": rows[:40], **summarize_rows(rows), "wall_ms": wall_ms}


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


def components(profiles: dict) -> dict:
    """The report's component table from the two workers' profiles."""
    return {"ranges": profiles["esamp"]["ranges"],
            "device_ms": {w: p["device_ms"] for w, p in profiles.items()},
            "wall_ms": {w: p["wall_ms"] for w, p in profiles.items()}}
