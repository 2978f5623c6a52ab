"""Request identity: which caller request, which prompt group and which of its n samples an
engine-side request is, from what vLLM itself records, never from the shape of the id.

Where vLLM knows it (the front-end process):
  the caller's id     the `request_id` the caller hands to LLMEngine / AsyncLLM.add_request
                      (surfaces engine.add_request, engine.async_add_request), before vLLM
                      reassigns it (request_ids/assign_request_id) or passes it on unchanged
                      (request_ids/passthrough);
  the parent, index   ParentRequest.get_child_info(index) -> (child id, child params): the
                      parent request's own id and the child's index (surface engine.child_info).

The front-end shim (shims/request_identity.py) writes these into the request's own
SamplingParams (`extra_args[IDENTITY_KEY]`, on a copy: the caller's object and vLLM's shared
child params are never changed), and vLLM carries the params to every engine process and
worker itself. Engine-side shims read them back here (`identity_of`). An id is never parsed:
`0_q`, `7_batch-abcdefgh` or a caller id with unicode and dashes is whatever the caller sent.

A request the front-end never saw (an engine-internal warm-up request, or a front-end without
the shims bound) has no recorded identity: it stands alone (its own group, caller id = engine
id) and `known` is False, so a subscriber can refuse to act on it.
"""

from __future__ import annotations

from copy import copy
from dataclasses import dataclass

IDENTITY_KEY = "driftcheck_request"


@dataclass(frozen=True)
class Identity:
    caller: str  # the id the caller sent
    group: str  # the prompt group: the parent request's engine id (n>1), else the request's own
    child: int | None  # index among the n samples of its prompt (None: n = 1)
    known: bool = True  # False: vLLM's front-end never recorded it (see module docstring)


def annotated(params, caller: str, parent: str | None = None, index: int | None = None):
    """A copy of `params` whose extra_args also carry the request's identity (None stays None:
    pooling requests have no sampling params)."""
    if params is None or not hasattr(params, "extra_args"):
        return params
    out = copy(params)
    out.extra_args = {**(params.extra_args or {}),
                      IDENTITY_KEY: {"caller": caller, "parent": parent, "index": index}}
    return out


def recorded(params) -> dict | None:
    """The identity the front-end recorded in these params, if any."""
    extra = getattr(params, "extra_args", None) or {}
    value = extra.get(IDENTITY_KEY)
    return value if isinstance(value, dict) and isinstance(value.get("caller"), str) else None


def identity_of(engine_id: str, params) -> Identity:
    """The identity of the engine-side request `engine_id` from its SamplingParams."""
    rec = recorded(params)
    if rec is None:
        return Identity(engine_id, engine_id, None, known=False)
    parent, index = rec.get("parent"), rec.get("index")
    return Identity(rec["caller"], parent if isinstance(parent, str) else engine_id,
                    index if isinstance(index, int) else None)


class Identities:
    """Engine-side: the identity of every live request, from its "added" event until "finished"
    (a finished event carries no params; a re-added, e.g. preempted, request is read again)."""

    def __init__(self) -> None:
        self.live: dict[str, Identity] = {}

    def added(self, engine_id: str, params) -> Identity:
        self.live[engine_id] = identity = identity_of(engine_id, params)
        return identity

    def finished(self, engine_id: str) -> Identity:
        return self.live.pop(engine_id, None) or Identity(engine_id, engine_id, None, known=False)
