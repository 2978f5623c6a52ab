"""Recording probe: counts every hook, checks tapped rows against the logits.

Attached in the process where the model runs. Every sampling step with a
prepare view it (1) checks each tap's device stamp advanced (the layer really
wrote this step), (2) reads the tapped rows at this step's logits indices (a
port hit per layer), and (3) recomputes logits from the deep tap through the
model's own final norm and LM head and compares them with the logits the
sampler received: a stale or misattributed row cannot match.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from driftcheck.adapters.model import reproduction_error
from driftcheck.shims.hook_points import HOOKS


@dataclass
class Record:
    steps: int = 0
    stale_taps: dict = field(default_factory=dict)  # layer -> steps where the stamp did not move
    deep_max_abs_err: float = 0.0
    row_count_mismatches: int = 0  # steps where the tap read more/fewer rows than live requests
    rows_checked: int = 0
    attributions: list = field(default_factory=list)  # (req_id, logits index) of each checked row, capped
    requests: list = field(default_factory=list)  # (kind, engine id, caller id, group, child index, known)


RECORD = Record()
_MAX_ATTRIBUTIONS = 2000


def on_sample(logits, view) -> None:
    if view is None or not HOOKS.taps:
        return
    RECORD.steps += 1
    n = len(view.req_ids)
    rows = HOOKS.live_rows(view)
    for layer in sorted(HOOKS.taps):
        if not HOOKS.tap_fired(layer, view):
            RECORD.stale_taps[layer] = RECORD.stale_taps.get(layer, 0) + 1
        tapped = HOOKS.tapped_rows(layer, view)
        if layer == max(HOOKS.taps):
            err = reproduction_error(view.runner.get_model(), tapped, logits)
            if err is None:
                RECORD.row_count_mismatches += 1
                continue
            RECORD.deep_max_abs_err = max(RECORD.deep_max_abs_err, err)
            RECORD.rows_checked += n
    if len(RECORD.attributions) < _MAX_ATTRIBUTIONS:
        RECORD.attributions += [(view.req_ids[i], int(rows[i])) for i in range(n)]


def on_request(event) -> None:
    RECORD.requests.append((event.kind, event.engine_id, event.caller_id, event.group, event.child, event.known))


_attached = False


def attach() -> None:
    global _attached
    if _attached:
        return
    HOOKS.subscribe("sample", on_sample)
    HOOKS.subscribe("request_event", on_request)
    HOOKS.subscribe("stats", lambda: asdict(RECORD), key="probe")
    _attached = True
