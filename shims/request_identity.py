"""The front-end shim: where vLLM admits a request, and where it fans n>1 out into children.

Runs in the process that holds the LLM / AsyncLLM (the caller's, or `vllm serve`'s API
server); it patches nothing the model runs through.

  LLMEngine.add_request / AsyncLLM.add_request(request_id, prompt, params, ...)
      (surfaces engine.add_request, engine.async_add_request: the first three parameters, in
      every release 0.10.0-0.33.0). Before vLLM sees the request: the `admit` hook point's
      subscribers may reject it (ESamp validates its per-request settings there, so a bad β is
      that caller's error, never an engine-step failure; raised as the release's own rejection,
      surface engine.request_rejection, so `vllm serve` answers 400), and the caller's id is recorded
      in a copy of its SamplingParams (adapters.request_ids). A prompt that is already an
      EngineCoreRequest (the deprecated path) is recorded under the id vLLM will use, its own.
  ParentRequest.get_child_info(index) -> (child id, child params)
      (surfaces engine.child_info, engine.child_ids: the child of request `self.request_id`).
      The child's params (a copy: vLLM shares one child params object between unseeded
      children) record the parent's id and the child's index beside the caller's id.
"""

from __future__ import annotations

import inspect

from driftcheck.adapters import request_ids
from driftcheck.patching import Patch
from driftcheck.shims.hook_points import HOOKS

HOOK_POINT = "request_identity"
RUNNER = None  # every runner: the front-end is the same
HANDLES = {
    "engine.add_request": ("admission/request-prompt-params",),
    "engine.async_add_request": ("admission/request-prompt-params",),
    "engine.child_info": ("child_info/index",),
    "engine.child_ids": ("child_ids/index_prefix",),
    "engine.request_ids": ("request_ids/passthrough", "request_ids/assign_request_id"),
    "engine.request_rejection": ("rejection/value-error", "rejection/validation-value-error",
                                 "rejection/validation-client-error"),
}

LEADING = ("request_id", "prompt", "params")  # the contract's first three parameters


def _arg(args: tuple, kwargs: dict, position: int):
    return args[position] if len(args) > position else kwargs.get(LEADING[position])


def _with_arg(args: tuple, kwargs: dict, position: int, value) -> tuple[tuple, dict]:
    if len(args) > position:
        return args[:position] + (value,) + args[position + 1:], kwargs
    if LEADING[position] in kwargs:
        return args, {**kwargs, LEADING[position]: value}
    return args, kwargs


def rejection(contract_id: str | None):
    """The error class a rejected request raises, per the engine.request_rejection contract: what vLLM
    itself raises for a bad request (so `vllm serve` answers 400, not 500), and still a ValueError."""
    if contract_id in (None, "rejection/value-error"):
        return ValueError
    from vllm.exceptions import VLLMValidationError

    if issubclass(VLLMValidationError, ValueError):
        return VLLMValidationError
    return type("RequestRejected", (VLLMValidationError, ValueError), {"__module__": __name__})


def admitted(engine, args: tuple, kwargs: dict, rejected=ValueError) -> tuple[tuple, dict]:
    """The add_request arguments with the request checked and its caller's id recorded."""
    request_id, prompt, params = (_arg(args, kwargs, i) for i in range(3))
    vllm_config = getattr(engine, "vllm_config", None)
    core = getattr(prompt, "sampling_params", None) if hasattr(prompt, "request_id") else None
    try:
        HOOKS.admit(core if core is not None else params, vllm_config)
    except ValueError as exc:
        if isinstance(exc, rejected):
            raise
        raise rejected(f"{type(exc).__name__}: {exc}") from exc
    if core is not None:  # an EngineCoreRequest: vLLM uses its own id and params
        prompt.sampling_params = request_ids.annotated(core, prompt.request_id)
        return args, kwargs
    if not isinstance(request_id, str):
        return args, kwargs  # vLLM's own check raises
    return _with_arg(args, kwargs, 2, request_ids.annotated(params, request_id))


def patches(ctx) -> list[Patch]:
    from vllm.v1.engine.async_llm import AsyncLLM
    from vllm.v1.engine.llm_engine import LLMEngine
    from vllm.v1.engine.parallel_sampling import ParentRequest

    rejected = rejection(ctx.contract_id("engine.request_rejection"))

    def make_add(original):
        if inspect.iscoroutinefunction(original):
            async def add_request(self, *args, **kwargs):
                args, kwargs = admitted(self, args, kwargs, rejected)
                return await original(self, *args, **kwargs)
        else:
            def add_request(self, *args, **kwargs):
                args, kwargs = admitted(self, args, kwargs, rejected)
                return original(self, *args, **kwargs)
        return add_request

    def make_child(original):
        def get_child_info(self, index, *args, **kwargs):
            child_id, params = original(self, index, *args, **kwargs)
            rec = request_ids.recorded(params)
            if rec is None:  # the parent was not admitted through add_request: nothing is known
                return child_id, params
            return child_id, request_ids.annotated(params, rec["caller"], parent=self.request_id, index=index)

        return get_child_info

    return [Patch(LLMEngine, "add_request", make_add, __name__, surface="engine.add_request"),
            Patch(AsyncLLM, "add_request", make_add, __name__, surface="engine.async_add_request"),
            Patch(ParentRequest, "get_child_info", make_child, __name__, surface="engine.child_info")]
