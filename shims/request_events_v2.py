"""Request added/finished events from Model Runner V2 (0.15.0 and later).

V2's runner adds new requests to its request states in `add_requests(scheduler_output)` and
drops finished ones (and preempted ones, which come back as new requests when rescheduled) in
`finish_requests(scheduler_output)`. Who sent each request is what the front-end recorded in its
SamplingParams (adapters.request_ids), as for V1.
"""

from __future__ import annotations

from driftcheck.adapters import request_ids
from driftcheck.patching import Patch
from driftcheck.shims.hook_points import HOOKS, RequestEvent

HOOK_POINT = "request_events"
RUNNER = "v2"
HANDLES = {
    "runner_v2.request_events": ("requests_v2/add+finish",),
}


def patches(ctx) -> list[Patch]:
    from vllm.v1.worker.gpu.model_runner import GPUModelRunner

    ids = request_ids.Identities()

    def make_add(original):
        def add_requests(self, scheduler_output, *args, **kwargs):
            for new in scheduler_output.scheduled_new_reqs:
                identity = ids.added(new.req_id, new.sampling_params)
                HOOKS.publish_request(RequestEvent.of("added", new.req_id, identity, new.sampling_params))
            return original(self, scheduler_output, *args, **kwargs)

        return add_requests

    def make_finish(original):
        def finish_requests(self, scheduler_output, *args, **kwargs):
            gone = set(scheduler_output.finished_req_ids) | set(getattr(scheduler_output, "preempted_req_ids", ()) or ())
            for req_id in sorted(gone):
                if req_id in self.req_states.req_id_to_index:  # only requests this runner holds
                    HOOKS.publish_request(RequestEvent.of("finished", req_id, ids.finished(req_id)))
            return original(self, scheduler_output, *args, **kwargs)

        return finish_requests

    return [Patch(GPUModelRunner, "add_requests", make_add, __name__),
            Patch(GPUModelRunner, "finish_requests", make_finish, __name__)]
