"""Request added/finished events in the process where the model runs.

Family: the runner learns of new and finished requests from
`SchedulerOutput.scheduled_new_reqs` / `.finished_req_ids` in
`GPUModelRunner._update_states` (0.10.0-0.33.0). Who sent each request (the caller's id,
the prompt group, the child index) is what the front-end recorded in its SamplingParams
(adapters.request_ids, shims/request_identity.py), never parsed from the id.
"""

from __future__ import annotations

from driftcheck.adapters import request_ids
from driftcheck.patching import Patch
from driftcheck.shims.hook_points import HOOKS, RequestEvent

HOOK_POINT = "request_events"
RUNNER = "v1"
HANDLES = {"runner.update_states": ("update_states/scheduler-output",)}


def patches(ctx) -> list[Patch]:
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    ids = request_ids.Identities()

    def make(original):
        def _update_states(self, scheduler_output, *args, **kwargs):
            for req_id in sorted(scheduler_output.finished_req_ids):
                HOOKS.publish_request(RequestEvent.of("finished", req_id, ids.finished(req_id)))
            for new in scheduler_output.scheduled_new_reqs:
                identity = ids.added(new.req_id, new.sampling_params)
                HOOKS.publish_request(RequestEvent.of("added", new.req_id, identity, new.sampling_params))
            return original(self, scheduler_output, *args, **kwargs)

        return _update_states

    return [Patch(GPUModelRunner, "_update_states", make, __name__, surface="runner.update_states")]
