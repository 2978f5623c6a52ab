"""ESamp inside the process where the model runs: gate, online distiller, fused sampler.

Configuration (engine-wide) rides in vLLM's `additional_config`, which reaches
every engine process:

    LLM(..., additional_config={"esamp": {"enable": True, "width": 256, "lr": 1e-3,
                                          "sharing": "shared" | "group"}})

Tap layers: `DRIFTCHECK_TAP_LAYERS` (default "0,-1": after the first decoder
layer, and the last layer's output, i.e. the input of the final norm).
Per request: `SamplingParams(extra_args={"esamp_beta": 0.8})`; absent or 0 = off.

Each sampling step (in Sampler.sample, before the draw):
  1. gate: during the first GATE_STEPS decoding steps nothing is trained or
     changed; the probes check every tap wrote this step, the tap read exactly
     the live rows, and the deep tap reproduces the sampler's logits through the
     model's own norm and LM head. A failure raises ESampGateFailed naming the
     surface: ESamp never runs on unverified hooks.
  2. predict the deep state from the shallow one (distiller before this step's
     update), for the post-filter hook to fuse;
  3. train on this step's (shallow, deep) rows of the sampled tokens (MSE, Adam).
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import asdict, dataclass, field

from driftcheck.adapters.model import logits_from_hidden
from driftcheck.shims.hook_points import HOOKS

GATE_STEPS = int(os.environ.get("ESAMP_GATE_STEPS", "2"))
MISS_LIMIT = 4  # steps a required hook may stay silent before ESamp stops the run
GATE_TOLERANCE = 1e-2  # |LM head(norm(deep tap)) - sampler logits|, fp32/bf16 rounding allowance
BETA_KEY = "esamp_beta"
DEFAULTS = {"enable": False, "width": 256, "lr": 1e-3, "sharing": "shared", "seed": 0}


class ESampGateFailed(RuntimeError):
    pass


@dataclass
class ESampCounters:
    enabled: bool = False
    gate_steps: int = 0
    gate_passed: bool = False
    train_steps: int = 0
    rows_trained: int = 0
    loss_last: float | None = None
    loss_sum: float = 0.0
    loss_history: list = field(default_factory=list)  # (train step, loss), every LOSS_EVERY steps
    intervention_calls: int = 0
    rows_intervened: int = 0
    candidates_sum: int = 0  # over the rows of every CANDIDATES_EVERY-th intervention
    rows_counted: int = 0  # the rows those counts cover
    groups_live: int = 0
    groups_reset: int = 0

    @property
    def loss_mean(self) -> float | None:
        return self.loss_sum / self.train_steps if self.train_steps else None

    def to_json(self) -> dict:
        out = asdict(self)
        out["loss_mean"] = self.loss_mean
        out["candidates_per_row"] = self.candidates_sum / self.rows_counted if self.rows_counted else None
        return out


LOSS_EVERY = 5
CANDIDATES_EVERY = 8  # interventions between two candidate counts


class ESampController:
    def __init__(self) -> None:
        self.config: dict | None = None
        self.counters = ESampCounters()
        self.distillers: dict = {}  # group key (or "shared") -> OnlineDistiller
        self.group_children: dict = {}  # group key -> live child requests
        self.pending = None  # (prediction [n, hidden], betas [n], view) for this step's post-filter
        self.expect_post_filter = False  # the step that set `pending` samples randomly
        self.missed_post_filter = 0
        self.steps_without_view = 0
        self.id_map = None
        self.unread_losses = deque()  # (loss tensor, rows, ready event | None), oldest first
        self.candidates_total = None  # device tensor: surviving candidates over intervened rows

    # -- configuration, read lazily from the runner's vLLM config
    def _configure(self, view) -> None:
        extra = getattr(view.runner.vllm_config, "additional_config", None) or {}
        self.config = {**DEFAULTS, **(extra.get("esamp") or {})}
        self.counters.enabled = bool(self.config["enable"])
        if self.counters.enabled:
            HOOKS.post_filter = self.post_filter  # only then does the sampler shim take the fused path
            from driftcheck.adapters.request_ids import id_map_for
            from driftcheck.shims.install import current_plan

            ctx = current_plan().context
            self.id_map = id_map_for(ctx.contract_id("engine.request_ids"), ctx.contract_id("engine.child_ids"))

    def _distiller(self, key, hidden, device):
        from esamp.distiller import OnlineDistiller

        if key not in self.distillers:
            self.distillers[key] = OnlineDistiller(hidden, int(self.config["width"]), float(self.config["lr"]),
                                                   seed=int(self.config["seed"]), device=device)
            self.counters.groups_live = len(self.distillers)
        return self.distillers[key]

    def _group(self, req_id: str) -> str:
        return "shared" if self.config["sharing"] == "shared" else self.id_map.split(req_id)[1]

    # -- request events: per-group state lives exactly as long as the group's requests
    def on_request(self, event) -> None:
        if not self.counters.enabled or self.config["sharing"] != "group":
            return
        if event.kind == "added":
            self.group_children[event.group] = self.group_children.get(event.group, 0) + 1
        else:
            left = self.group_children.get(event.group, 1) - 1
            if left <= 0:
                self.group_children.pop(event.group, None)
                if self.distillers.pop(event.group, None) is not None:
                    self.counters.groups_reset += 1
                self.counters.groups_live = len(self.distillers)
            else:
                self.group_children[event.group] = left

    # -- every sampling step
    def on_sample(self, logits, view) -> None:
        self._check_hooks_fired(logits, view)
        self.pending = None
        if view is None or view.spec_decode:
            return
        if self.config is None:
            self._configure(view)
        if not self.counters.enabled:
            return
        import torch

        layers = sorted(HOOKS.taps)
        if len(layers) < 2:
            raise ESampGateFailed("ESamp needs a shallow and a deep tap; bound taps: "
                                  f"{layers} (surface model.*.decoder_layer)")
        shallow_layer, deep_layer = layers[0], layers[-1]
        n = len(view.req_ids)
        if not self.counters.gate_passed:
            fired = [HOOKS.tap_fired(layer, view) for layer in layers]
            self._gate(logits, view, fired, HOOKS.tapped_rows(shallow_layer, view),
                       HOOKS.tapped_rows(deep_layer, view), n)
            return
        # Past the gate, nothing here waits for the device: the tap check reads the
        # previous step's counter, losses are read once their step is done.
        if not all([HOOKS.tap_fired(layer, view, sync=False) for layer in layers]):
            raise ESampGateFailed("ESamp: a tap stopped writing (surface model.*.decoder_layer); "
                                  "the distiller would train on stale rows")
        self._read_losses(block=False)
        keep = view.sampled_rows
        if not keep:
            return
        betas = self._betas(view)
        shallow = HOOKS.tapped_rows(shallow_layer, view)
        deep = HOOKS.tapped_rows(deep_layer, view)
        device = shallow.device
        every_row = len(keep) == n  # plain decode: no partial prefill among the rows
        if not every_row:
            idx = _to_device(keep, torch.long, device)
            shallow, deep = shallow.index_select(0, idx), deep.index_select(0, idx)
        groups = [self._group(view.req_ids[i]) for i in keep]
        if len(set(groups)) == 1:
            pred_kept = self._predict_and_train(groups[0], shallow, deep)
        else:
            pred_kept = torch.empty(len(keep), shallow.shape[1], dtype=torch.float32, device=device)
            for key in dict.fromkeys(groups):
                sel = _to_device([j for j, g in enumerate(groups) if g == key], torch.long, device)
                pred_kept[sel] = self._predict_and_train(key, shallow.index_select(0, sel), deep.index_select(0, sel))
        if every_row:
            pred = pred_kept
        else:
            pred = torch.zeros(n, shallow.shape[1], dtype=torch.float32, device=device)  # β is 0 on these rows
            pred[idx] = pred_kept
            mask = torch.zeros(n, dtype=torch.bool)
            mask[keep] = True
            betas = torch.where(mask, betas, torch.zeros_like(betas))
        if bool((betas != 0).any()):  # betas live on the host: no device read
            self.pending = (pred, betas, view)
            metadata = HOOKS.sampling_metadata
            self.expect_post_filter = not getattr(metadata, "all_greedy", False)

    def _predict_and_train(self, key, shallow, deep):
        """The prediction for this step's intervention (before this step's update), then the update."""
        distiller = self._distiller(key, shallow.shape[1], shallow.device)
        pred = distiller.predict(shallow)
        loss, ready = distiller.train_async(shallow, deep)
        self.unread_losses.append((loss, shallow.shape[0], ready))
        return pred

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

    def _read_losses(self, block: bool) -> None:
        """Fold finished training steps' losses into the counters, oldest first; with
        block=False, stop at the first step the device has not finished."""
        c = self.counters
        while self.unread_losses:
            loss, rows, ready = self.unread_losses[0]
            if ready is not None and not block and not ready.query():
                break
            if ready is not None:
                ready.synchronize()
            self.unread_losses.popleft()
            value = float(loss)
            c.train_steps += 1
            c.rows_trained += rows
            c.loss_last = value
            c.loss_sum += value
            if c.train_steps % LOSS_EVERY == 1:
                c.loss_history.append((c.train_steps, value))

    def stats(self) -> dict:
        """The counters, with every queued training step's loss read (waits for the device)."""
        self._read_losses(block=True)
        if self.candidates_total is not None:
            self.counters.candidates_sum = int(self.candidates_total)
        return self.counters.to_json()

    def _betas(self, view):
        import torch

        requests = getattr(view.runner, "requests", {})
        out = []
        for req_id in view.req_ids:
            state = requests.get(req_id)
            params = getattr(state, "sampling_params", None)
            extra = getattr(params, "extra_args", None) or {}
            out.append(float(extra.get(BETA_KEY, 0.0) or 0.0))
        return torch.tensor(out, dtype=torch.float32)

    def _gate(self, logits, view, fired, shallow, deep, n) -> None:
        import torch

        if not view.decode_rows:
            return
        self.counters.gate_steps += 1
        if not all(fired):
            raise ESampGateFailed("ESamp gate: a tap did not write this step (surface model.*.decoder_layer); "
                                  "the distiller would train on stale rows")
        if shallow.shape[0] != n or deep.shape[0] != n:
            raise ESampGateFailed(f"ESamp gate: the tap read {deep.shape[0]} rows for {n} live requests "
                                  "(surface runner.prepare_inputs)")
        model = view.runner.get_model()
        with torch.no_grad():
            recomputed = logits_from_hidden(model, deep)
        width = min(recomputed.shape[-1], logits.shape[-1])
        err = float((recomputed[:, :width].float() - logits[:, :width].float()).abs().max())
        if err > GATE_TOLERANCE * max(1.0, float(logits[:, :width].abs().max())):
            raise ESampGateFailed(f"ESamp gate: deep tap rows do not reproduce the sampler's logits "
                                  f"(max |Δ| {err:.3g}; surfaces runner.prepare_inputs / model.*.final_norm)")
        if self.counters.gate_steps >= GATE_STEPS:
            self.counters.gate_passed = True

    # -- post-filter hook: fuse over the surviving candidates
    def post_filter(self, batch):
        if self.pending is None:
            return None
        pred, betas, view = self.pending
        self.pending = None
        if view is not batch.view:
            return None
        import torch

        from esamp.fused import fused_logits

        model = view.runner.get_model()
        ref = batch.logits
        with torch.no_grad():
            dist = logits_from_hidden(model, pred.to(next(model.parameters()).dtype))[:, : ref.shape[1]]
        temperature = batch.sampling_metadata.temperature
        if temperature is None:
            return None
        beta_dev = _to_device(betas, torch.float32, ref.device)
        out = fused_logits(ref, dist, beta_dev, temperature.to(ref.device),
                           any_beta_at_most_minus_one=bool((betas <= -1).any()))
        c = self.counters
        c.intervention_calls += 1
        if c.intervention_calls % CANDIDATES_EVERY == 1:
            # a pass over the logits, so sampled; counted on the device, read by stats()
            active = (beta_dev != 0).unsqueeze(1)
            candidates = (torch.isfinite(ref) & active).sum()
            self.candidates_total = candidates if self.candidates_total is None else self.candidates_total + candidates
            c.rows_counted += int((betas != 0).sum())
        c.rows_intervened += int((betas != 0).sum())
        return out


def _to_device(values, dtype, device):
    """Host values onto the device without a stream sync: a plain .to("cuda") of pageable
    memory makes PyTorch wait for the whole stream (the forward in flight) first."""
    import torch

    host = values if isinstance(values, torch.Tensor) else torch.tensor(values, dtype=dtype)
    if torch.device(device).type != "cuda":
        return host.to(device=device, dtype=dtype)
    return host.to(dtype).pin_memory().to(device, non_blocking=True)


CONTROLLER: ESampController | None = None


def attach() -> ESampController:
    """Subscribe ESamp to the hook points in this process (idempotent)."""
    global CONTROLLER
    if CONTROLLER is None:
        CONTROLLER = ESampController()
        HOOKS.sampler_listeners.append(CONTROLLER.on_sample)
        HOOKS.request_listeners.append(CONTROLLER.on_request)
        HOOKS.stats_providers["esamp"] = CONTROLLER.stats
    return CONTROLLER
