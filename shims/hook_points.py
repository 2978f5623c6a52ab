"""Hook points: the stable seams ESamp and the probes use, whatever vLLM looks like.

Shims publish into one per-process `HOOKS` object; subscribers (the ESamp
runtime, the probes) subscribe to it. Everything here is plain Python: which
vLLM internals feed it is the shims' business.

What each subscriber receives is declared in HOOK_SPECS and checked when it
subscribes (`HOOKS.subscribe(name, fn)`), not left to comments:

  prepare_view    fn(view)           after the runner prepared a step: this step's rows
                                     (adapters.prepare.PrepareView)
  sample          fn(logits, view)   at the sampler's entry, every sampling step (view None
                                     when the rows are not a prepared step, e.g. a warm-up)
  post_filter     fn(batch) -> logits | None
                                     the one handler in the sampler after top-k/top-p/min-p,
                                     before the draw (PostFilterBatch); logits it returns are drawn
  sampled         fn(view)           the sampler returned: this step's draw is queued on the device (view
                                     None as for `sample`); work queued now runs after it
  post_filter_wants  fn(view) -> bool
                                     asked before sampling: will the post-filter handler change this
                                     step's logits? (a runner whose fused sampler never materialises
                                     filtered logits then draws through the unfused path)
  request_event   fn(event)          a request was added / finished (RequestEvent)
  admit           fn(params, vllm_config)
                                     in the front-end, when vLLM admits a request, before it reaches
                                     the engine (vllm_config: the engine's, None if vLLM does not say):
                                     raise ValueError (naming the setting) to reject that request
                                     alone; the caller gets the error, the engine never sees it
  stats           fn() -> dict       a subscriber's own findings, written into the stats files

Layer taps are not callbacks: tapped layers write persistent buffers (Tap) that
subscribers read for the rows of a view (`tapped_rows`), so they survive
torch.compile and CUDA graphs.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
import time
from collections import deque
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from driftcheck import env
from driftcheck.files import sweep_stale_temps, write_atomic

DEFAULT_TAP_LAYERS = (0, -1)


def tap_layers_from_env() -> tuple[int, ...]:
    raw = os.environ.get(env.TAP_LAYERS, "")
    if not raw.strip():
        return DEFAULT_TAP_LAYERS
    return tuple(int(x) for x in raw.split(",") if x.strip())


@dataclass(frozen=True)
class HookSpec:
    """What a subscriber of one hook point receives, and how many may subscribe."""

    name: str
    receives: tuple[str, ...]  # the positional arguments a subscriber is called with
    returns: str  # what the caller does with the return value
    single: bool = False  # one handler only (a second subscription is an error)
    keyed: bool = False  # subscribers register under a name (stats providers)


HOOK_SPECS = {
    "prepare_view": HookSpec("prepare_view", ("view",), "ignored"),
    "sample": HookSpec("sample", ("logits", "view"), "ignored"),
    "sampled": HookSpec("sampled", ("view",), "ignored"),
    "post_filter": HookSpec("post_filter", ("batch",), "logits to draw from, or None to draw vLLM's", single=True),
    "post_filter_wants": HookSpec("post_filter_wants", ("view",), "True if post_filter will change the logits",
                                  single=True),
    "request_event": HookSpec("request_event", ("event",), "ignored"),
    "admit": HookSpec("admit", ("params", "vllm_config"), "raise ValueError to reject the request"),
    "stats": HookSpec("stats", (), "a JSON-able dict", keyed=True),
}


class HookSpecError(TypeError):
    """A subscriber does not take what its hook point delivers."""


def check_subscriber(spec: HookSpec, fn: Callable) -> None:
    """Raise HookSpecError unless `fn` can be called with exactly the spec's arguments."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # a builtin without a signature: nothing to check
    try:
        sig.bind(*spec.receives)
    except TypeError as exc:
        raise HookSpecError(f"{getattr(fn, '__qualname__', fn)} cannot subscribe to hook point {spec.name!r}: it "
                            f"receives ({', '.join(spec.receives)}) and {exc}") from None


@dataclass
class Counters:
    """Per-hook counts in this process; a probe's zero-hit alarm reads them."""

    prepare_views: int = 0
    sampled_rows: int = 0  # rows the prepare views said will be sampled
    port_hits: dict = field(default_factory=dict)  # layer index -> tap publications read
    sampler_calls: int = 0  # sampler entry calls (includes vLLM's warm-up dummy runs)
    sampled_calls: int = 0  # sampler calls that returned (the `sampled` hook point)
    post_filter_calls: int = 0  # post-filter hook calls with a current prepare view
    post_filter_rows: int = 0
    interventions: int = 0  # post-filter calls whose subscriber changed the logits
    fused_sampler_bypassed: int = 0  # V2 steps drawn without the fused (FlashInfer/XPU) sampler, for ESamp
    requests_admitted: int = 0  # front-end: requests vLLM admitted through the identity shim
    requests_added: int = 0
    requests_finished: int = 0
    host_s: dict = field(default_factory=dict)  # host seconds inside a shim's own work, by range (`timed`)


@dataclass
class RequestEvent:
    kind: str  # "added" | "finished"
    engine_id: str
    caller_id: str
    group: str  # the prompt group (n>1 siblings share it)
    child: int | None = None  # index among the n samples of its prompt
    params: Any = field(default=None, repr=False)  # the request's SamplingParams ("added" only)
    known: bool = True  # False: vLLM's front-end never recorded who sent it (adapters.request_ids)

    @classmethod
    def of(cls, kind: str, engine_id: str, identity, params=None) -> RequestEvent:
        """From an adapters.request_ids.Identity."""
        return cls(kind, engine_id, identity.caller, identity.group, identity.child, params, identity.known)


@dataclass
class SamplingInfo:
    """This sampling step's settings, whatever runner sampled: set by the sampler shims."""

    temperature: Any  # device tensor, one per logits row (None when every row is greedy, V1)
    all_greedy: bool  # read on the host: no row samples randomly
    generators: dict = field(default_factory=dict)  # V1: per-request torch generators


@dataclass
class PostFilterBatch:
    """What the post-filter handler receives."""

    logits: Any  # [rows, vocab], temperature and min-p applied, top-k/top-p filtered (-inf outside)
    view: Any  # adapters.prepare.PrepareView of this step
    sampling: SamplingInfo


@dataclass
class Tap:
    layer: int  # resolved (non-negative) layer index
    buffer: Any  # torch.Tensor [max_tokens, hidden]
    stamp: Any  # torch.Tensor [1] int64, +1 per forward of the layer
    last_stamp: int = 0
    checked_view: Any = None  # the step (prepare view) the stamp was last read for
    fired: bool = False
    in_flight: Any = field(default_factory=deque)  # (host copy of the stamp, ready event), oldest first


#: Set by a profiled benchmark round (driftcheck/bench/profile.py): the shims' and ESamp's steps then
#: show as named profiler ranges ("hooks.*", "esamp.*"). Off, `span` costs one global read.
RANGES = False
_OFF = nullcontext()


def span(name: str):
    """A named profiler range around a hook's work while RANGES is on; else nothing."""
    if not RANGES:
        return _OFF
    import torch

    return torch.profiler.record_function(name)


class timed:
    """`with timed(name, into):` = `span(name)`, and the host seconds spent inside it (time.perf_counter, no
    profiler) added to into[name]: what a hook costs the step's host, measured where the hook runs. A class,
    not a generator: it runs several times a step (0.5 µs a use here, against 1.1 µs for @contextmanager)."""

    __slots__ = ("name", "into", "start", "inner")

    def __init__(self, name: str, into: dict) -> None:
        self.name, self.into = name, into

    def __enter__(self):
        self.inner = span(self.name)
        self.inner.__enter__()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.into[self.name] = self.into.get(self.name, 0.0) + time.perf_counter() - self.start
        return self.inner.__exit__(*exc)


class HookPoints:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.counters = Counters()
        self.view = None  # adapters.prepare.PrepareView of the current step
        self.sampling: SamplingInfo | None = None  # the current sampling step's settings
        self.taps: dict[int, Tap] = {}
        self.tap_layers = tap_layers_from_env()
        self.num_layers: int | None = None
        self.engine_esamp_enabled = False  # additional_config["esamp"]["enable"], seen at model build
        self.subscribers: dict[str, list[Callable]] = {name: [] for name in HOOK_SPECS if not HOOK_SPECS[name].keyed}
        self.stats_providers: dict[str, Callable[[], dict]] = {}  # keyed "stats" subscribers
        self.bound: dict[str, list] = {}  # hook point -> the shim modules that bound it (one per runner)
        self.runner_refusals: dict[str, str] = {}  # runner family -> why the plan does not cover it
        self.runner_built: str | None = None  # the runner family this process constructed
        self.returns: dict[str, set] = {}  # surface -> shapes it returned (return-shape probe)

    # -- subscribing (subscribers: ESamp, the probes)
    def subscribe(self, hook: str, fn: Callable, key: str | None = None) -> None:
        spec = HOOK_SPECS.get(hook)
        if spec is None:
            raise HookSpecError(f"no hook point {hook!r}; there are {', '.join(HOOK_SPECS)}")
        check_subscriber(spec, fn)
        if spec.keyed:
            self.stats_providers[key or getattr(fn, "__module__", "?")] = fn
            return
        listeners = self.subscribers[hook]
        if spec.single and listeners and fn not in listeners:
            raise HookSpecError(f"hook point {hook!r} takes one handler; {listeners[0].__qualname__} has it")
        if fn not in listeners:
            listeners.append(fn)

    def unsubscribe(self, hook: str, fn: Callable) -> None:
        if fn in self.subscribers.get(hook, []):
            self.subscribers[hook].remove(fn)

    @property
    def post_filter(self) -> Callable | None:
        """The post-filter handler, if a subscriber wants to change the filtered logits."""
        handlers = self.subscribers["post_filter"]
        return handlers[0] if handlers else None

    # -- publishing (called by shims)
    def publish_view(self, view) -> None:
        self.view = view
        self.counters.prepare_views += 1
        self.counters.sampled_rows += view.num_sampled
        for listener in self.subscribers["prepare_view"]:
            listener(view)

    def publish_sample(self, logits, view) -> None:
        self.counters.sampler_calls += 1
        for listener in self.subscribers["sample"]:
            listener(logits, view)

    def publish_sampled(self, view) -> None:
        self.counters.sampled_calls += 1
        for listener in self.subscribers["sampled"]:
            listener(view)

    def wants_post_filter(self, view) -> bool:
        """Whether the post-filter handler will change this step's logits (a shim that can draw
        through a path that never materialises filtered logits must take the other path)."""
        if self.post_filter is None or view is None:
            return False
        asked = self.subscribers["post_filter_wants"]
        return bool(asked[0](view)) if asked else True

    def publish_request(self, event: RequestEvent) -> None:
        if event.kind == "added":
            self.counters.requests_added += 1
        else:
            self.counters.requests_finished += 1
        for listener in self.subscribers["request_event"]:
            listener(event)

    def admit(self, params, vllm_config=None) -> None:
        """A request is being admitted (front-end): every admission subscriber may reject it."""
        for check in self.subscribers["admit"]:
            check(params, vllm_config)
        self.counters.requests_admitted += 1

    def live_rows(self, view):
        """Packed-token indices of this step's sampled rows: one per live request, never more."""
        return view.logits_indices[: len(view.req_ids)]

    def tapped_rows(self, layer: int, view):
        """This step's rows of one tap for the view's live requests (a port hit)."""
        buffer, rows = self.tap_source(layer, view)
        return buffer.index_select(0, rows)

    def tap_source(self, layer: int, view, rows=None):
        """(the tap's whole buffer, the packed-token indices of the view's live requests on the device): the
        rows `tapped_rows` would select, left for the caller's kernel to gather (a port hit all the same).
        `rows`: `live_rows(view)`, where the caller has it already."""
        tap = self.taps[layer]
        self.counters.port_hits[layer] = self.counters.port_hits.get(layer, 0) + 1
        return tap.buffer, self.live_rows(view) if rows is None else rows

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

    # -- stats export, so a parent process can read an engine process's counters
    def write_stats(self) -> None:
        out_dir = os.environ.get(env.STATS_DIR)
        if not out_dir:
            return
        payload = {"pid": os.getpid(), **rank_info(), "counters": asdict(self.counters), "bound": self.bound,
                   "runner": self.runner_built,
                   "taps": sorted(self.taps), "returns": {k: sorted(v) for k, v in self.returns.items()},
                   **{name: provide() for name, provide in self.stats_providers.items()}}
        write_atomic(os.path.join(out_dir, f"stats-{os.getpid()}.json"), json.dumps(payload))


HOOKS = HookPoints()


def rank_info() -> dict:
    """This process's place among vLLM's workers: {"rank", "world_size"} of torch.distributed once
    vLLM initialised it (every tensor-parallel worker, rank 0 included), else rank 0 of 1. Read
    without importing torch into a process that has not (the front-end)."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return {"rank": dist.get_rank(), "world_size": dist.get_world_size()}
    return {"rank": 0, "world_size": 1}


def read_stats(out_dir: str) -> list[dict]:
    """Counters every process wrote into `out_dir` (see env.STATS_DIR); what a killed writer left
    half-staged there is removed (files.sweep_stale_temps)."""
    sweep_stale_temps(out_dir)
    out = []
    for name in sorted(os.listdir(out_dir)):
        if name.startswith("stats-") and name.endswith(".json"):
            with open(os.path.join(out_dir, name)) as f:
                out.append(json.load(f))
    return out
