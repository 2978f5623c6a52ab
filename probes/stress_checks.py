"""Engine-side half of `driftcheck stress --shrink`, and the zero-hit alarm.

Runs where the model runs (attached by the plugin when DRIFTCHECK_PROBES=stress,
or directly in-process). Every sampling step with a prepare view it checks
that each request appears once, that the tap read exactly the live rows and
no index is out of range, that every tap really wrote this step, and it saves
the tapped rows of the sampled tokens (with request id and sequence position)
for the parent to compare with a reference recomputation.

Zero-hit alarm: after ALARM_STEPS steps that decoded, every required hook must
have delivered something; otherwise the step raises ZeroHitAlarm naming the
surface, so the run stops instead of silently training nothing.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

from driftcheck import env
from driftcheck.shims.hook_points import HOOKS, rank_info

ALARM_STEPS = 4  # decoding steps after which every required hook must have delivered something

# hook point -> the surface to name when it stays silent
HOOK_SURFACES = {
    "prepare_view": "runner.prepare_inputs (GPUModelRunner._prepare_inputs)",
    "layer_taps": "model.*.decoder_layer (decoder layer forward)",
    "post_filter": "topk_topp.forward_* (TopKTopPSampler entry)",
    "request_events": "engine.request_ids (GPUModelRunner._update_states)",
}


class ZeroHitAlarm(RuntimeError):
    pass


@dataclass
class StressState:
    steps: int = 0
    decode_steps: int = 0
    sampler_steps_without_view: int = 0
    tap_writes: dict = field(default_factory=dict)  # layer -> steps its stamp moved
    violations: list = field(default_factory=list)
    max_live_rows: int = 0
    shrink_steps: int = 0  # steps whose live row count fell below the previous step's
    prev_rows: int = 0
    alarm: str | None = None


STATE = StressState()
_MAX_VIOLATIONS = 50


def _violation(msg: str) -> None:
    if len(STATE.violations) < _MAX_VIOLATIONS:
        STATE.violations.append(msg)


def check_alarm() -> None:
    """Raise ZeroHitAlarm if a required hook delivered nothing after ALARM_STEPS decoding steps."""
    if STATE.decode_steps < ALARM_STEPS or STATE.alarm:
        return
    silent = []
    if HOOKS.counters.prepare_views == 0:
        silent.append("prepare_view")
    if not HOOKS.taps or any(STATE.tap_writes.get(layer, 0) == 0 for layer in HOOKS.taps):
        silent.append("layer_taps")
    if HOOKS.post_filter is not None and HOOKS.counters.post_filter_calls == 0:
        silent.append("post_filter")
    if HOOKS.counters.requests_added == 0:
        silent.append("request_events")
    if silent:
        STATE.alarm = "; ".join(
            f"zero-hit alarm: hook point {hp!r} delivered nothing after {STATE.decode_steps} decode steps "
            f"(surface {HOOK_SURFACES[hp]})" for hp in silent
        )
        HOOKS.write_stats()
        raise ZeroHitAlarm(STATE.alarm)


def on_sample(logits, view) -> None:
    if view is None:
        if logits.shape[0] > 0 and HOOKS.counters.requests_added > 0:
            STATE.sampler_steps_without_view += 1
            STATE.decode_steps += 1  # a real batch was sampled without a prepare view
            check_alarm()
        return
    import torch

    STATE.steps += 1
    if view.decode_rows:
        STATE.decode_steps += 1
    n = len(view.req_ids)
    if n < STATE.prev_rows:
        STATE.shrink_steps += 1
    STATE.prev_rows, STATE.max_live_rows = n, max(STATE.max_live_rows, n)
    if len(set(view.req_ids)) != n:
        _violation(f"step {STATE.steps}: a request appears twice in the batch: {view.req_ids}")
    rows = HOOKS.live_rows(view)
    packed = sum(view.num_scheduled_tokens)
    if rows.shape[0] != n:
        _violation(f"step {STATE.steps}: stale rows: the tap read {rows.shape[0]} rows for {n} live requests "
                   f"(the decode batch shrank from {STATE.max_live_rows})")
    if rows.numel() and int(rows.max()) >= packed:
        _violation(f"step {STATE.steps}: row index {int(rows.max())} out of range for {packed} packed tokens")
    saved = {}
    for layer in sorted(HOOKS.taps):
        if HOOKS.tap_fired(layer, view):
            STATE.tap_writes[layer] = STATE.tap_writes.get(layer, 0) + 1
        else:
            _violation(f"step {STATE.steps}: tap at layer {layer} did not write this step")
        saved[layer] = HOOKS.tapped_rows(layer, view)[: n].detach().to("cpu", torch.float32).clone()
    out_dir = os.environ.get(env.STRESS_DIR)
    if out_dir and rank_info()["rank"] == 0:  # under TP every rank holds the same rows: rank 0's are checked
        keep = view.sampled_rows
        torch.save(
            {
                "step": STATE.steps,
                "req_ids": [view.req_ids[i] for i in keep],
                "positions": [view.positions[i] for i in keep],
                "rows": {layer: t[keep] for layer, t in saved.items()},
            },
            os.path.join(out_dir, f"rows-{os.getpid()}-{STATE.steps:06d}.pt"),
        )
    check_alarm()


_attached = False


def attach() -> None:
    global _attached
    if _attached:
        return
    from driftcheck.probes import recorder

    recorder.attach()
    HOOKS.subscribe("sample", on_sample)
    HOOKS.subscribe("stats", lambda: asdict(STATE), key="stress")
    _attached = True

