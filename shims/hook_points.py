"""Hook points: the stable seams ESamp and the probes use, whatever vLLM looks like.

Shims publish into one per-process `HOOKS` object; subscribers (the ESamp
runtime, the probes) read from it. Everything here is plain Python: which
vLLM internals feed it is the shims' business.

  prepare view   after `_prepare_inputs`: this step's rows (adapters.prepare.PrepareView)
  layer taps     persistent per-layer buffers the decoder layers write every forward
  post-filter    in the sampler, after top-k/top-p/min-p, before the draw
  request events added / finished, with engine id, caller id and prompt-group key
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

#: Environment switches (they reach vLLM's engine-core process, which inherits the environment).
ENV_ENABLE = "DRIFTCHECK_SHIMS"  # "1": the vllm.general_plugins entry point applies the shims
ENV_TAP_LAYERS = "DRIFTCHECK_TAP_LAYERS"  # e.g. "0,-1" (default): shallow and deep tap layers
ENV_STATS_DIR = "DRIFTCHECK_STATS_DIR"  # if set, each process writes its counters there every step
ENV_ALLOW_UNBOUND = "DRIFTCHECK_ALLOW_UNBOUND"  # "1": warn instead of refusing on unknown contracts
ENV_FAULT = "DRIFTCHECK_FAULT"  # probes' own tests: reintroduce a known bug (one of FAULTS)
FAULTS = ("stale_rows", "drop_id_map", "silent_tap")

DEFAULT_TAP_LAYERS = (0, -1)


def tap_layers_from_env() -> tuple[int, ...]:
    raw = os.environ.get(ENV_TAP_LAYERS, "")
    if not raw.strip():
        return DEFAULT_TAP_LAYERS
    return tuple(int(x) for x in raw.split(",") if x.strip())


@dataclass
class Counters:
    """Per-hook counts in this process; a probe's zero-hit alarm reads them."""

    prepare_views: int = 0
    sampled_rows: int = 0  # rows the prepare views said will be sampled
    port_hits: dict = field(default_factory=dict)  # layer index -> tap publications read
    sampler_calls: int = 0  # Sampler.sample calls (includes vLLM's warm-up dummy runs)
    post_filter_calls: int = 0  # post-filter hook calls with a current prepare view
    post_filter_rows: int = 0
    interventions: int = 0  # post-filter calls whose subscriber changed the logits
    requests_added: int = 0
    requests_finished: int = 0


@dataclass
class RequestEvent:
    kind: str  # "added" | "finished"
    engine_id: str
    caller_id: str
    group: str  # the prompt group (n>1 siblings share it)


@dataclass
class Tap:
    layer: int  # resolved (non-negative) layer index
    buffer: Any  # torch.Tensor [max_tokens, hidden]
    stamp: Any  # torch.Tensor [1] int64, +1 per forward of the layer
    last_stamp: int = 0
    checked_view: Any = None  # the step (prepare view) the stamp was last read for
    fired: bool = False
    in_flight: Any = field(default_factory=deque)  # (host copy of the stamp, ready event), oldest first


class HookPoints:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.counters = Counters()
        self.view = None  # adapters.prepare.PrepareView of the current step
        self.sampling_metadata = None
        self.taps: dict[int, Tap] = {}
        self.tap_layers = tap_layers_from_env()
        self.num_layers: int | None = None
        self.engine_esamp_enabled = False  # additional_config["esamp"]["enable"], seen at model build
        self.post_filter: Callable | None = None  # (PostFilterBatch) -> logits | None
        self.prepare_listeners: list[Callable] = []
        self.request_listeners: list[Callable] = []
        self.sampler_listeners: list[Callable] = []  # (logits_at_sample_entry, view) -> None
        self.bound: dict[str, str] = {}  # hook point -> shim module that bound it
        self.stats_providers: dict[str, Callable[[], dict]] = {}  # subscribers' own findings, for write_stats
        self.returns: dict[str, set] = {}  # surface -> shapes it returned (return-shape probe)
        self.fault = os.environ.get(ENV_FAULT) or None
        self._scratch = None

    # -- publishing (called by shims)
    def publish_view(self, view) -> None:
        self.view = view
        self.counters.prepare_views += 1
        self.counters.sampled_rows += len(view.sampled_rows)
        for listener in self.prepare_listeners:
            listener(view)

    def publish_request(self, event: RequestEvent) -> None:
        if event.kind == "added":
            self.counters.requests_added += 1
        else:
            self.counters.requests_finished += 1
        for listener in self.request_listeners:
            listener(event)

    def live_rows(self, view):
        """Packed-token indices of this step's sampled rows: one per live request, never more.

        Fault `stale_rows` (DRIFTCHECK_FAULT) reintroduces the decode-shrink bug: index
        with a persistent scratch buffer sliced to the largest batch seen, not the live count.
        """
        rows = view.logits_indices[: len(view.req_ids)]
        if self.fault == "stale_rows":
            import torch

            if self._scratch is None or self._scratch.shape[0] < rows.shape[0]:
                grown = torch.zeros(max(rows.shape[0], 1), dtype=rows.dtype, device=rows.device)
                if self._scratch is not None:
                    grown[: self._scratch.shape[0]] = self._scratch
                self._scratch = grown
            self._scratch[: rows.shape[0]] = rows
            return self._scratch
        return rows

    def tapped_rows(self, layer: int, view):
        """This step's rows of one tap for the view's live requests (a port hit)."""
        tap = self.taps[layer]
        self.counters.port_hits[layer] = self.counters.port_hits.get(layer, 0) + 1
        return tap.buffer.index_select(0, self.live_rows(view))

    def observe_return(self, surface: str, result) -> None:
        """Record the shape a wrapped surface actually returned ('value' or 'tuple/N')."""
        shape = f"tuple/{len(result)}" if isinstance(result, tuple) else "value"
        self.returns.setdefault(surface, set()).add(shape)

    def tap_fired(self, layer: int, view, *, sync: bool = True) -> bool:
        """Whether the layer wrote its buffer during the forward that produced `view`'s step.

        sync=True reads the device counter now (once per step, however many subscribers
        ask). sync=False is for the hot path on an accelerator: it queues a non-blocking
        copy of the counter and answers from the newest copy the device has finished, so
        no step waits for the device; a tap that stops writing is seen a step or two late.
        """
        tap = self.taps[layer]
        if tap.checked_view is view:
            return tap.fired
        tap.checked_view = view
        if sync or tap.stamp.device.type == "cpu":
            tap.in_flight.clear()
            now = int(tap.stamp.item())
        else:
            import torch

            host = torch.empty(1, dtype=tap.stamp.dtype, pin_memory=True)
            host.copy_(tap.stamp, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record()
            tap.in_flight.append((host, ready))
            done = None
            while tap.in_flight and tap.in_flight[0][1].query():
                done = tap.in_flight.popleft()[0]
            if done is None:
                return tap.fired  # nothing finished since the last verdict
            now = int(done)
        tap.fired, tap.last_stamp = now != tap.last_stamp, now
        return tap.fired

    # -- stats export, so a parent process can read an engine-core process's counters
    def write_stats(self) -> None:
        out_dir = os.environ.get(ENV_STATS_DIR)
        if not out_dir:
            return
        payload = {"pid": os.getpid(), "counters": asdict(self.counters), "bound": self.bound,
                   "taps": sorted(self.taps), "returns": {k: sorted(v) for k, v in self.returns.items()},
                   **{name: provide() for name, provide in self.stats_providers.items()}}
        fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".stats-")
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f)
        os.replace(tmp, os.path.join(out_dir, f"stats-{os.getpid()}.json"))


HOOKS = HookPoints()


def read_stats(out_dir: str) -> list[dict]:
    """Counters every process wrote into `out_dir` (see ENV_STATS_DIR)."""
    out = []
    for name in sorted(os.listdir(out_dir)):
        if name.startswith("stats-") and name.endswith(".json"):
            with open(os.path.join(out_dir, name)) as f:
                out.append(json.load(f))
    return out
