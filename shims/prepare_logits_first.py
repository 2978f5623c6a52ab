"""Prepare-inputs view for the logits-first family (vLLM 0.11.1 and later).

`_prepare_inputs(scheduler_output, num_scheduled_tokens, ...)` returns a tuple
that starts `(logits_indices, spec_decode_metadata, ...)`; the scheduled-token
counts are its second argument.
"""

from __future__ import annotations

from driftcheck.adapters.prepare import build_view
from driftcheck.shims.hook_points import HOOKS, timed
from driftcheck.patching import Patch
from driftcheck.shims.install import ShimError

HOOK_POINT = "prepare_view"
RUNNER = "v1"
HANDLES = {
    "runner.prepare_inputs": ("prepare/logits-first-4", "prepare/logits-first-2", "prepare/logits-first-3"),
    "input_batch.fields": ("input_batch/esamp-fields",),
}
#: The returned values the view is built from, found by name in the contract's return_names.
RETURN_NAMES_USED = {"runner.prepare_inputs": ("logits_indices", "spec_decode_metadata")}


def patches(ctx) -> list[Patch]:
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    positions = ctx.contract("runner.prepare_inputs").aspects["return_names"].positions()
    gone = [n for n in RETURN_NAMES_USED["runner.prepare_inputs"] if n not in positions]
    if gone:
        raise ShimError(f"{__name__}: _prepare_inputs no longer returns {', '.join(gone)}")

    def make(original):
        def _prepare_inputs(self, scheduler_output, num_scheduled_tokens, *args, **kwargs):
            result = original(self, scheduler_output, num_scheduled_tokens, *args, **kwargs)
            HOOKS.observe_return("runner.prepare_inputs", result)
            with timed("hooks.prepare", HOOKS.counters.host_s):
                HOOKS.publish_view(build_view(self, result, positions, num_scheduled=num_scheduled_tokens))
            return result

        return _prepare_inputs

    return [Patch(GPUModelRunner, "_prepare_inputs", make, __name__, surface="runner.prepare_inputs")]
