"""Engine-side request ids -> the caller's id and the prompt group, per contract.

request_ids/passthrough:       engine id == caller id
request_ids/assign_request_id: engine id == caller id + '-' + 8 random characters
child_ids/index_prefix:        the n>1 samples of request R are 'i_R'
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_CHILD_PREFIX = re.compile(r"^(\d+)_(.*)$", re.S)
_RANDOM_SUFFIX = re.compile(r"^(.*)-[0-9A-Za-z]{8}$", re.S)


@dataclass(frozen=True)
class RequestIdMap:
    reassigned: bool  # the engine appends a random suffix
    child_prefix: bool = True

    def split(self, engine_id: str) -> tuple[str, str, int | None]:
        """(caller id, group key, child index) of an engine-side id."""
        index = None
        group = engine_id
        if self.child_prefix:
            m = _CHILD_PREFIX.match(engine_id)
            if m:
                index, group = int(m.group(1)), m.group(2)
        caller = group
        if self.reassigned:
            m = _RANDOM_SUFFIX.match(group)
            if m:
                caller = m.group(1)
        return caller, group, index


def id_map_for(request_ids_contract: str | None, child_ids_contract: str | None) -> RequestIdMap:
    return RequestIdMap(
        reassigned=request_ids_contract == "request_ids/assign_request_id",
        child_prefix=child_ids_contract == "child_ids/index_prefix",
    )
