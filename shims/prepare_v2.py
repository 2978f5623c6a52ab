"""Prepare-inputs view for Model Runner V2 (vllm/v1/worker/gpu/model_runner.py, 0.18.0 and later).

`GPUModelRunner.prepare_inputs(scheduler_output, ...)` returns the step's InputBatch: its rows
are requests (`req_ids`, state slots `idx_mapping_np`), `logits_indices` the packed token each
logits row reads. Which rows sample and which decode comes from the runner's request states
(prefill progress before this step). Only the first argument is read, so the parameters vLLM
added after it over the releases do not matter.
"""

from __future__ import annotations

from driftcheck.adapters.prepare import build_view_v2
from driftcheck.patching import Patch
from driftcheck.shims.hook_points import HOOKS, timed

HOOK_POINT = "prepare_view"
RUNNER = "v2"
HANDLES = {
    "runner_v2.prepare_inputs": ("prepare_v2/batch-desc", "prepare_v2/batch-req-state", "prepare_v2/loras"),
    "input_batch_v2.fields": ("input_batch_v2/expanded",),
    "runner_v2.request_state": ("request_state_v2/prefill", "request_state_v2/prefill+mirror"),
}


def patches(ctx) -> list[Patch]:
    from vllm.v1.worker.gpu.model_runner import GPUModelRunner

    def make(original):
        def prepare_inputs(self, scheduler_output, *args, **kwargs):
            batch = original(self, scheduler_output, *args, **kwargs)
            HOOKS.observe_return("runner_v2.prepare_inputs", batch)
            with timed("hooks.prepare", HOOKS.counters.host_s):
                HOOKS.publish_view(build_view_v2(self, batch))
            return batch

        return prepare_inputs

    return [Patch(GPUModelRunner, "prepare_inputs", make, __name__, surface="runner_v2.prepare_inputs")]
