"""Sampler hook for Model Runner V2 (vllm/v1/worker/gpu/sample/sampler.py, 0.18.0 and later).

V2's `Sampler.__call__(logits, input_batch)` applies temperature and min-p in place (its
sampling states), then top-k/top-p, and draws with the module's `gumbel_sample(logits, ...,
apply_temperature=False)`: the logits the draw receives are exactly the post-filter logits.
The shim wraps the entry (this step's view and sampling settings, the `sample` hook) and the
module's `gumbel_sample` (the post-filter hook: a handler's logits are the ones drawn, with
vLLM's own per-request seeds). On releases with a fused sampler (FlashInfer, XPU) that draws
without materialising the filtered logits, a step the post-filter handler wants to change is
drawn through the unfused path instead (counted in `fused_sampler_bypassed`); every other step
keeps vLLM's choice, so β = 0 stays vLLM's own sampling.
"""

from __future__ import annotations

from driftcheck.patching import Patch
from driftcheck.shims.hook_points import HOOKS, PostFilterBatch, SamplingInfo

HOOK_POINT = "post_filter"
RUNNER = "v2"
HANDLES = {
    "sampler_v2.call": ("sampler_v2/input-batch",),
    "sampler_v2.draw": ("draw_v2/gumbel-after-temperature",),
    "sampler_v2.fused_switch": ("fused_v2/states", "fused_v2/flashinfer", "fused_v2/flashinfer+xpu"),
}


def patches(ctx) -> list[Patch]:
    from vllm.v1.worker.gpu.sample import sampler as v2

    switches = [f for f in ctx.contract("sampler_v2.fused_switch").aspects["fields"].names if f.startswith("use_")]

    def make_call(original):
        def __call__(self, logits, input_batch, *args, **kwargs):
            view = HOOKS.view
            if view is not None and view.batch is not input_batch:
                view = None  # not this step's prepared batch (e.g. a warm-up dummy run)
            temperature = self.sampling_states.temperature
            rows = input_batch.idx_mapping_np[: input_batch.num_reqs]
            HOOKS.sampling = SamplingInfo(
                temperature.gpu[input_batch.expanded_idx_mapping] if HOOKS.post_filter is not None else None,
                bool((temperature.np[rows] == 0.0).all()))
            HOOKS.publish_sample(logits, view)
            bypass = [s for s in switches if getattr(self, s, False)] if HOOKS.wants_post_filter(view) else []
            for switch in bypass:
                setattr(self, switch, False)
            if bypass:
                HOOKS.counters.fused_sampler_bypassed += 1
            try:
                result = original(self, logits, input_batch, *args, **kwargs)
                HOOKS.observe_return("sampler_v2.call", result)
                HOOKS.publish_sampled(view)
                return result
            finally:
                for switch in bypass:
                    setattr(self, switch, True)
                HOOKS.sampling = None
                HOOKS.view = None  # a view serves exactly one sampling step
                HOOKS.write_stats()

        return __call__

    def make_draw(original):
        def gumbel_sample(logits, *args, **kwargs):
            hook, view, sampling = HOOKS.post_filter, HOOKS.view, HOOKS.sampling
            if hook is None or view is None or sampling is None or view.spec_decode or logits.shape[0] != len(view.req_ids):
                return original(logits, *args, **kwargs)
            HOOKS.counters.post_filter_calls += 1
            HOOKS.counters.post_filter_rows += logits.shape[0]
            changed = hook(PostFilterBatch(logits, view, sampling))
            if changed is not None:
                HOOKS.counters.interventions += 1
                logits = changed
            return original(logits, *args, **kwargs)

        return gumbel_sample

    return [Patch(v2.Sampler, "__call__", make_call, __name__, surface="sampler_v2.call"),
            Patch(v2, "gumbel_sample", make_draw, __name__)]
