"""Request added/finished events in the process where the model runs.

Family: the runner learns of new and finished requests from
`SchedulerOutput.scheduled_new_reqs` / `.finished_req_ids` in
`GPUModelRunner._update_states` (0.10.0-0.33.0). Engine ids are mapped back to
the caller's id and the prompt group by the request-id contracts
(adapters.request_ids).
"""

from __future__ import annotations

from driftcheck.adapters import request_ids
from driftcheck.patching import Patch
from driftcheck.shims.hook_points import HOOKS, RequestEvent

HOOK_POINT = "request_events"
RUNNER = "v1"
HANDLES = {
    "engine.request_ids": ("request_ids/passthrough", "request_ids/assign_request_id"),
    "engine.child_ids": ("child_ids/index_prefix",),
}


def patches(ctx) -> list[Patch]:
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    ids = request_ids.id_map_for(ctx.contract_id("engine.request_ids"), ctx.contract_id("engine.child_ids"))

    def event(kind: str, engine_id: str, params=None) -> RequestEvent:
        caller, group, child = ids.split(engine_id)
        return RequestEvent(kind, engine_id, caller, group, child, params)

    def make(original):
        def _update_states(self, scheduler_output, *args, **kwargs):
            for req_id in sorted(scheduler_output.finished_req_ids):
                HOOKS.publish_request(event("finished", req_id))
            for new in scheduler_output.scheduled_new_reqs:
                HOOKS.publish_request(event("added", new.req_id, new.sampling_params))
            return original(self, scheduler_output, *args, **kwargs)

        return _update_states

    return [Patch(GPUModelRunner, "_update_states", make, __name__)]
