"""Sampler hook: logits after top-k/top-p/min-p filtering, before the draw.

Family: the top-k/top-p sampler entry points take `(logits, generators, k, p)`
and call the module's `apply_top_k_top_p(logits, k, p)` filter before drawing
(0.10.0-0.33.0, tensor- or tuple-returning), with min-p applied earlier as an
argmax-invariant logits processor.

When a post-filter handler is subscribed (`HOOKS.post_filter`), the wrapper filters with
vLLM's own function, lets the subscriber change the surviving candidates'
logits, and hands the result to vLLM's own draw with k=p=None, so the draw,
its generators and its RNG discipline stay vLLM's. With no subscriber the
original runs untouched.
"""

from __future__ import annotations

from driftcheck.patching import Patch
from driftcheck.shims.hook_points import HOOKS, PostFilterBatch, SamplingInfo

HOOK_POINT = "post_filter"
RUNNER = "v1"
HANDLES = {
    "sampler.sample": ("sample/tensor", "sample/tuple", "sample/tuple-override"),
    "topk_topp.forward_native": ("topk_topp/tensor", "topk_topp/tuple"),
    "topk_topp.forward_cpu": ("topk_topp_cpu/absent", "topk_topp_cpu/tuple"),
    "topk_topp.apply_top_k_top_p": ("filter/3", "filter/topp-only-rows"),
    "sampler.min_p": ("min_p/logitsprocs-module", "min_p/logitsprocs-builtin"),
    "sampler.apply_temperature": ("temperature/instance", "temperature/all-random", "temperature/static"),
}

#: entry points a platform may pick in TopKTopPSampler.__init__ (self.forward = self.forward_<x>)
ENTRY_POINTS = ("forward_native", "forward_cpu", "forward_cuda", "forward_hip", "forward_xpu", "forward_tpu")


def patches(ctx) -> list[Patch]:
    from vllm.v1.sample import sampler as sampler_module
    from vllm.v1.sample.ops import topk_topp_sampler as tt

    def make_sample(original):
        def sample(self, logits, sampling_metadata, *args, **kwargs):
            HOOKS.sampling = SamplingInfo(sampling_metadata.temperature, bool(sampling_metadata.all_greedy),
                                          sampling_metadata.generators)
            view = HOOKS.view
            if view is not None and logits.shape[0] != len(view.req_ids):
                view = None  # not this step's batch (e.g. a warm-up dummy run)
            HOOKS.publish_sample(logits, view)
            try:
                result = original(self, logits, sampling_metadata, *args, **kwargs)
                HOOKS.observe_return("sampler.sample", result)
                HOOKS.publish_sampled(view)
                return result
            finally:
                HOOKS.sampling = None
                HOOKS.view = None  # a view serves exactly one sampling step
                HOOKS.write_stats()

        return sample

    def make_entry(original):
        surface = f"topk_topp.{original.__name__}"

        def entry(self, logits, generators, k, p, *args, **kwargs):
            hook, view = HOOKS.post_filter, HOOKS.view
            if hook is None or view is None or view.spec_decode or logits.shape[0] != len(view.req_ids):
                result = original(self, logits, generators, k, p, *args, **kwargs)
                HOOKS.observe_return(surface, result)
                return result
            HOOKS.counters.post_filter_calls += 1
            HOOKS.counters.post_filter_rows += logits.shape[0]
            filtered = tt.apply_top_k_top_p(logits, k, p)
            changed = hook(PostFilterBatch(filtered, view, HOOKS.sampling))
            if changed is not None:
                HOOKS.counters.interventions += 1
                filtered = changed
            result = original(self, filtered, generators, None, None, *args, **kwargs)
            HOOKS.observe_return(surface, result)
            return result

        return entry

    out = [Patch(sampler_module.Sampler, "sample", make_sample, __name__, surface="sampler.sample")]
    for name in ENTRY_POINTS:
        if name in vars(tt.TopKTopPSampler):
            surface = f"topk_topp.{name}" if f"topk_topp.{name}" in HANDLES else None
            out.append(Patch(tt.TopKTopPSampler, name, make_entry, __name__, surface=surface))
    return out
