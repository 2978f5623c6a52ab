"""Where one benchmark round's time goes: the top operators by self time, host and device."""

from __future__ import annotations


def profile_round(fn) -> list[dict]:
    """Where one round's time goes: the top operators by self time, host and device."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        fn()
    rows = []
    for e in prof.key_averages():
        device_us = getattr(e, "self_device_time_total", 0) or getattr(e, "self_cuda_time_total", 0)
        rows.append({"name": e.key, "calls": e.count, "self_cpu_ms": e.self_cpu_time_total / 1e3,
                     "self_device_ms": device_us / 1e3})
    rows.sort(key=lambda r: -(r["self_device_ms"] or r["self_cpu_ms"]))
    return rows[:25]
