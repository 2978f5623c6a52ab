"""Request added/finished events from Model Runner V2 (0.15.0 and later).

V2's runner adds new requests to its request states in `add_requests(scheduler_output)` and
drops finished ones (and preempted ones, which come back as new requests when rescheduled) in
`finish_requests(scheduler_output)`. Engine ids map to the caller's id and the prompt group by
the request-id contracts (adapters.request_ids), as for V1.
"""

from __future__ import annotations

from driftcheck.adapters import request_ids
from driftcheck.patching import Patch
from driftcheck.shims.hook_points import HOOKS, RequestEvent

HOOK_POINT = "request_events"
RUNNER = "v2"
HANDLES = {
    "runner_v2.request_events": ("requests_v2/add+finish",),
    "engine.request_ids": ("request_ids/passthrough", "request_ids/assign_request_id"),
    "engine.child_ids": ("child_ids/index_prefix",),
}


def patches(ctx) -> list[Patch]:
    from vllm.v1.worker.gpu.model_runner import GPUModelRunner

    ids = request_ids.id_map_for(ctx.contract_id("engine.request_ids"), ctx.contract_id("engine.child_ids"))

    def event(kind: str, engine_id: str, params=None) -> RequestEvent:
        caller, group, child = ids.split(engine_id)
        return RequestEvent(kind, engine_id, caller, group, child, params)

    def make_add(original):
        def add_requests(self, scheduler_output, *args, **kwargs):
            for new in scheduler_output.scheduled_new_reqs:
                HOOKS.publish_request(event("added", new.req_id, new.sampling_params))
            return original(self, scheduler_output, *args, **kwargs)

        return add_requests

    def make_finish(original):
        def finish_requests(self, scheduler_output, *args, **kwargs):
            gone = set(scheduler_output.finished_req_ids) | set(getattr(scheduler_output, "preempted_req_ids", ()) or ())
            for req_id in sorted(gone):
                if req_id in self.req_states.req_id_to_index:  # only requests this runner holds
                    HOOKS.publish_request(event("finished", req_id))
            return original(self, scheduler_output, *args, **kwargs)

        return finish_requests

    return [Patch(GPUModelRunner, "add_requests", make_add, __name__),
            Patch(GPUModelRunner, "finish_requests", make_finish, __name__)]
