"""ESamp inside the process where the model runs: one step at a time.

Settings: esamp/config.py. Tap layers: env.TAP_LAYERS (default "0,-1": after the
first decoder layer, and the last layer's output, i.e. the input of the final norm).

Each sampling step (the `sample` hook, before the draw):
  1. gate (esamp/gate.py): during the first decoding steps nothing is trained or
     changed; the hooks are checked, and a failure stops the run naming the surface;
  2. predict the deep state from the shallow one with the request's distiller
     (esamp/groups.py: shared, or one per prompt group), before this step's update;
  3. train on this step's (shallow, deep) rows of the sampled tokens (esamp/training.py);
  4. leave the prediction for the post-filter hook, which fuses the logits over the
     surviving candidates (esamp/intervene.py).
Never silent: after the gate, a tap that stops writing, a post-filter hook that
leaves fused logits unused, or sampling steps without a prepare view stop the run
with the surface named.
"""

from __future__ import annotations

import os

from driftcheck.adapters.model import final_rms_norm
from driftcheck.shims.hook_points import HOOKS, rank_info, timed
from esamp.config import ESampConfig, validate_request
from esamp.counters import ESampCounters
from esamp.gate import ESampGateFailed, Gate
from esamp.groups import Groups
from esamp.intervene import FusedSampler, Pending, to_device, weight_dtype
from esamp.training import LossBook

__all__ = ["ESampController", "ESampGateFailed", "MISS_LIMIT", "CONTROLLER", "attach"]

MISS_LIMIT = 4  # steps a required hook may stay silent before ESamp stops the run
DIGEST_EVERY = 8  # interventions between two cross-rank digests (tensor parallelism only)
DIGEST_LIMIT = 64
TAP_CHECK_EVERY = 8  # steps between two checks that the taps still write (each check queues a copy per tap)


class ESampController:
    def __init__(self) -> None:
        self.config: ESampConfig | None = None
        self.counters = ESampCounters()
        self.gate: Gate | None = None
        self.groups = Groups(ESampConfig(), self.counters)  # configured at the first prepared step
        self.losses = LossBook(self.counters)
        self.fused = FusedSampler(self.counters)
        self.pending: Pending | None = None  # for this step's post-filter hook
        self.expect_post_filter = False  # the step that set `pending` samples randomly
        self.missed_post_filter = 0
        self.steps_without_view = 0
        self.world_size = 1  # tensor-parallel workers: > 1 (read at the first step: vLLM sets it up after us)
        self.digests: list = []  # (intervention, train steps queued, distiller state sum, fused logits sum)
        self._norm = None  # FinalNorm of the model
        self.prepared_steps = 0  # steps past the gate

    # -- configuration, read lazily from the runner's vLLM config
    def _configure(self, view) -> None:
        self.config = ESampConfig.from_vllm_config(view.runner.vllm_config)
        self.world_size = rank_info()["world_size"]
        self.fused.lockstep = self.world_size > 1
        self.fused.graphs = bool(self.config.cuda_graphs) and os.environ.get("ESAMP_GRAPHS", "1") != "0"
        self.counters.enabled = bool(self.config.enable)
        self.gate = Gate(int(self.config.gate_steps))
        self.groups.config = self.config
        if self.counters.enabled:
            HOOKS.subscribe("post_filter", self.post_filter)  # only then does the sampler take the fused path
            HOOKS.subscribe("post_filter_wants", self.wants)
            HOOKS.subscribe("sampled", self.on_sampled)

    # -- request events: groups and β come from the engine's own data about each request
    def on_request(self, event) -> None:
        self.groups.on_request(event)

    # -- every sampling step
    def on_sample(self, logits, view) -> None:
        self.counters.host_steps += 1
        with timed("esamp.sample_hook", self.counters.host_s):
            self._on_sample(logits, view)

    def _on_sample(self, logits, view) -> None:
        self._check_hooks_fired(logits, view)
        self.pending = None
        if view is None or view.spec_decode:
            return
        if self.config is None:
            self._configure(view)
        if not self.counters.enabled:
            return
        layers = sorted(HOOKS.taps)
        if len(layers) < 2:
            raise ESampGateFailed("ESamp needs a shallow and a deep tap; bound taps: "
                                  f"{layers} (surface model.*.decoder_layer)")
        shallow_layer, deep_layer = layers[0], layers[-1]
        if not self.gate.passed:
            fired = [HOOKS.tap_fired(layer, view) for layer in layers]
            self.gate.check(logits, view, fired, HOOKS.tapped_rows(shallow_layer, view),
                            HOOKS.tapped_rows(deep_layer, view))
            self.counters.gate_steps, self.counters.gate_passed = self.gate.checked, self.gate.passed
            return
        # Past the gate, nothing here waits for the device: the tap check reads the
        # previous step's counter, losses are read once their step is done.
        self.prepared_steps += 1
        if self.prepared_steps % TAP_CHECK_EVERY == 0 and \
                not all([HOOKS.tap_fired(layer, view, sync=False) for layer in layers]):
            raise ESampGateFailed("ESamp: a tap stopped writing (surface model.*.decoder_layer); "
                                  "the distiller would train on stale rows")
        self.losses.read(block=False)
        sampling = view.num_sampled  # a count: the list of rows is built only where some row does not sample
        if not sampling:
            return
        n = len(view.req_ids)
        rows = self.groups.rows(view.req_ids)
        sources = self._sources(view, shallow_layer, deep_layer)
        if sampling == n and rows.one_key is not None:
            # plain decode, one distiller: the captured step gathers the rows from the taps itself
            hidden, device = sources[0][0].shape[1], sources[0][0].device
            distiller = self.groups.distiller(rows.one_key, hidden, device)
            ready = self.losses.train_gathered(distiller, sources, n, self._post(view.runner.get_model()))
            self._pend(ready.pred, ready.post, rows.betas, rows.acting, view, ready, rows)
            return
        (src_s, index_s), (src_d, index_d) = sources
        self._step(view, view.sampled_rows, rows, src_s.index_select(0, index_s), src_d.index_select(0, index_d))

    def _sources(self, view, shallow_layer: int, deep_layer: int):
        """Where this step's training rows come from: ((shallow tap's buffer, row indices), (deep tap's
        buffer, row indices)), the indices on the device, one per live request."""
        rows = HOOKS.live_rows(view)  # one selection for both taps
        return HOOKS.tap_source(shallow_layer, view, rows), HOOKS.tap_source(deep_layer, view, rows)

    def _pend(self, pred, normed, betas, acting: int, view, ready, rows) -> None:
        """Leave this step's prediction for the post-filter hook, if a row acts on it."""
        if acting:
            self.pending = Pending(pred, betas, view, normed, ready, rows)
            self.expect_post_filter = not (HOOKS.sampling is not None and HOOKS.sampling.all_greedy)
        elif ready is not None:
            ready.wait()  # nothing reads the prediction; the stream order stays the same either way

    def _step(self, view, keep: list[int], cached, shallow, deep) -> None:
        """The general step: a partial prefill among the rows, or several distillers (prompt groups)."""
        import torch

        n = len(view.req_ids)
        device = shallow.device
        betas, keys = cached.betas, cached.keys
        every_row = len(keep) == n  # plain decode: no partial prefill among the rows
        if not every_row:
            idx = to_device(keep, torch.long, device)
            shallow, deep = shallow.index_select(0, idx), deep.index_select(0, idx)
            keys = [keys[i] for i in keep]
            cached = None  # the betas change below
        post = self._post(view.runner.get_model())
        ready = None
        if len(set(keys)) == 1:
            ready = self.losses.train(self.groups.distiller(keys[0], shallow.shape[1], device), shallow, deep, post)
            pred_kept, normed_kept = ready.pred, ready.post
        else:
            pred_kept = torch.empty(len(keep), shallow.shape[1], dtype=torch.float32, device=device)
            normed_kept = torch.empty(len(keep), shallow.shape[1], dtype=post.dtype, device=device)
            for key in dict.fromkeys(keys):
                sel = to_device([j for j, k in enumerate(keys) if k == key], torch.long, device)
                distiller = self.groups.distiller(key, shallow.shape[1], device)
                step = self.losses.train(distiller, shallow.index_select(0, sel), deep.index_select(0, sel), post)
                step.wait()
                pred_kept[sel], normed_kept[sel] = step.pred, step.post
        if every_row:
            pred, normed = pred_kept, normed_kept
        else:
            if ready is not None:
                ready.wait()
                ready = None
            pred = torch.zeros(n, shallow.shape[1], dtype=torch.float32, device=device)  # β is 0 on these rows
            normed = torch.zeros(n, shallow.shape[1], dtype=post.dtype, device=device)
            pred[idx], normed[idx] = pred_kept, normed_kept
            mask = torch.zeros(n, dtype=torch.bool)
            mask[keep] = True
            betas = torch.where(mask, betas, torch.zeros_like(betas))
        self._pend(pred, normed, betas, cached.acting if cached is not None else int((betas != 0).sum()), view,
                   ready, cached)

    def _post(self, model):
        """The distiller step's `post`: the model's final norm of the prediction, in the LM head's dtype
        (one object per model, so the captured steps are reused)."""
        if self._norm is None or self._norm.model is not model:
            self._norm = FinalNorm(model)
        return self._norm

    def on_sampled(self, view) -> None:
        """The sampler queued this step's draw: the distiller updates it deferred go after it (defer_update)."""
        if self.losses.deferred:
            with timed("esamp.sampled", self.counters.host_s):
                self.losses.settle(after_draw=True)

    def _check_hooks_fired(self, logits, view) -> None:
        """Never a silent no-op: ESamp on, yet no prepare view reaches the sampler, or the
        post-filter hook leaves a step's fused logits unused, for MISS_LIMIT steps running."""
        if self.pending is not None and self.expect_post_filter:
            self.missed_post_filter += 1
            if self.missed_post_filter >= MISS_LIMIT:
                raise ESampGateFailed(f"ESamp: the post-filter hook did not fire for {MISS_LIMIT} steps with "
                                      "β>0 rows (surface topk_topp.forward_* / sampler.sample)")
        else:
            self.missed_post_filter = 0
        if view is None and logits.shape[0] > 0 and HOOKS.engine_esamp_enabled and HOOKS.counters.requests_added:
            self.steps_without_view += 1
            if self.steps_without_view >= MISS_LIMIT:
                raise ESampGateFailed(f"ESamp is enabled but no prepare view reached the sampler for {MISS_LIMIT} "
                                      "steps (surface runner.prepare_inputs)")
        elif view is not None:
            self.steps_without_view = 0

    # -- the post-filter hook: fuse over the surviving candidates
    def wants(self, view) -> bool:
        """Whether this step's post-filter call will change the logits."""
        return self.pending is not None and self.pending.view is view

    def post_filter(self, batch):
        pending, self.pending = self.pending, None
        if pending is None or pending.view is not batch.view:
            return None
        with timed("esamp.fuse", self.counters.host_s):
            out = self.fused.fuse(pending, batch)
        if out is not None and self.world_size > 1 and self.counters.intervention_calls % DIGEST_EVERY == 1:
            self._record_digest(out)
        return out

    def _record_digest(self, fused) -> None:
        """Under tensor parallelism every rank must hold the same distillers and fuse the same logits
        (or the ranks draw different tokens); a digest of both, every DIGEST_EVERY interventions, kept on
        the device (read at stats(): no sync here) for the probes to compare across ranks."""
        import torch

        if len(self.digests) >= DIGEST_LIMIT:
            return
        for d in self.groups.distillers.values():
            d.wait_trained()  # their updates may run on a side stream: read the weights after the last one
        with torch.no_grad():
            params = [p.detach().double().sum() for d in self.groups.distillers.values() for p in d.model.parameters()]
            state = torch.stack(params).sum() if params else torch.zeros((), dtype=torch.float64)
            logits = torch.where(torch.isfinite(fused), fused, torch.zeros_like(fused)).double().sum()
        self.digests.append((self.counters.intervention_calls, self.losses.queued,
                             state, logits))

    def reset_counts(self) -> None:
        """Start the candidate and agreement counts afresh (a benchmark's next sampling setting);
        training, interventions and the loss keep counting."""
        self.fused.reset_counts()
        c = self.counters
        c.candidates_sum = c.rows_counted = c.agreement_hits = c.rows_overflowed = 0
        c.candidates_quantiles = {}
        c.host_s, c.host_steps = {}, 0

    def stats(self) -> dict:
        """The counters, with every queued training step's loss read (waits for the device)."""
        self.losses.read(block=True)
        self.fused.read_candidates()
        out = self.counters.to_json()
        out["digests"] = [[call, steps, float(state), float(logits)] for call, steps, state, logits in self.digests]
        # times a captured step's parameter block had to wait for its slot's last copy (kernels.Params): a
        # host wait in the hot path, expected 0
        blocks = [cp.params for cp in self.fused.passes.values()] + [
            g.params for d in self.groups.distillers.values() for g in d.graphs.values() if g.params is not None]
        out["params_waits"] = sum(b.waits for b in blocks)
        import torch

        if torch.cuda.is_initialized():
            # the caching allocator's retries (a cudaFree of every cached block, which waits for the
            # device) and device frees so far in this process: a round they grow in stalled on memory
            mem = torch.cuda.memory_stats()
            out["cuda_alloc_retries"] = mem.get("num_alloc_retries")
            out["cuda_device_frees"] = mem.get("num_device_free")
        return out


class FinalNorm:
    """post(prediction) = the model's final norm of it, in the dtype of the model's weights. `rms_norm`: (weight,
    eps) where that norm presents itself as a plain RMS norm (adapters.model final_rms_norm); the distiller's
    fused step then computes it in its last forward kernel, once that matched this module on a real step."""

    def __init__(self, model) -> None:
        self.model = model
        self.dtype = weight_dtype(model)
        self.rms_norm = final_rms_norm(model)

    def __call__(self, pred):
        return self.model.model.norm(pred.to(self.dtype))


CONTROLLER: ESampController | None = None


def attach() -> ESampController:
    """Subscribe ESamp to the hook points in this process (idempotent)."""
    global CONTROLLER
    if CONTROLLER is None:
        CONTROLLER = ESampController()
        HOOKS.subscribe("sample", CONTROLLER.on_sample)
        HOOKS.subscribe("request_event", CONTROLLER.on_request)
        HOOKS.subscribe("admit", validate_request)  # front-end: a bad β is that request's error
        HOOKS.subscribe("stats", CONTROLLER.stats, key="esamp")
    return CONTROLLER
