"""Who shares a distiller: the whole batch ("shared"), or each prompt group ("group": the n
samples of one prompt). A group's distiller lives exactly as long as its requests; which
group a request belongs to, and its β, come from the request events (the engine's own data
about the request), never from the shape of its id."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from esamp.config import ESampConfig, beta_of
from esamp.counters import ESampCounters

SHARED = "shared"


@dataclass
class BatchRows:
    """A batch's rows as ESamp sees them, computed once per batch (esamp/groups.py Groups.rows)."""

    betas: Any  # [rows] fp32 host tensor, 0 where ESamp does not act
    keys: list  # group key per row
    one_key: Any  # the key when every row shares one distiller, else None
    active: Any  # [rows] bool host tensor: betas != 0
    acting: int  # rows with β ≠ 0
    beta_dev: Any = None  # betas on the device, once a step put them there


class Groups:
    def __init__(self, config: ESampConfig, counters: ESampCounters) -> None:
        self.config = config
        self.counters = counters
        self.distillers: dict = {}  # group key (or SHARED) -> OnlineDistiller
        self.children: dict = {}  # group key -> live requests
        self.group_of: dict = {}  # engine id -> group key
        self.beta_of: dict = {}  # engine id -> β
        self.version = 0  # bumped by every request event: what `rows` cached is stale then
        self._rows = None  # (version, request ids, (betas, keys, β on the device or None))

    def on_request(self, event) -> None:
        self.version += 1
        if event.kind == "added" and not event.known and beta_of(event.params):
            from esamp.gate import ESampGateFailed

            raise ESampGateFailed(f"ESamp: request {event.engine_id!r} asks for ESamp but reached the engine without "
                                  "the identity vLLM's front-end gives it (surface engine.add_request: the process "
                                  "holding the LLM / AsyncLLM has not bound driftcheck's shims; import esamp.runtime "
                                  "there)")
        if event.kind == "added":
            self.group_of[event.engine_id] = event.group
            self.beta_of[event.engine_id] = beta_of(event.params)
            self.children[event.group] = self.children.get(event.group, 0) + 1
            return
        self.group_of.pop(event.engine_id, None)
        self.beta_of.pop(event.engine_id, None)
        left = self.children.get(event.group, 1) - 1
        if left > 0:
            self.children[event.group] = left
            return
        self.children.pop(event.group, None)
        if self.config.sharing == "group" and self.distillers.pop(event.group, None) is not None:
            self.counters.groups_reset += 1
            self.counters.groups_live = len(self.distillers)

    def key(self, engine_id: str) -> str:
        if self.config.sharing == SHARED:
            return SHARED
        try:
            return self.group_of[engine_id]
        except KeyError:
            from esamp.gate import ESampGateFailed

            raise ESampGateFailed(f"ESamp: request {engine_id!r} is sampled but was never announced by the "
                                  "request events (surface engine.request_ids)") from None

    def rows(self, engine_ids) -> BatchRows:
        """What ESamp needs per row of a batch of engine ids; decode steps repeat the last batch until a
        request joins or leaves, so the answer is cached until the next request event."""
        import torch

        ids = tuple(engine_ids)
        if self._rows is None or self._rows[0] != self.version or self._rows[1] != ids:
            betas = torch.tensor(self.betas(ids), dtype=torch.float32)
            keys = [self.key(r) for r in ids]
            active = betas != 0
            self._rows = (self.version, ids, BatchRows(betas, keys, keys[0] if len(set(keys)) == 1 else None,
                                                       active, int(active.sum())))
        return self._rows[2]

    def betas(self, engine_ids: list[str]) -> list[float]:
        return [self.beta_of.get(r, 0.0) for r in engine_ids]

    def distiller(self, key, hidden: int, device):
        from esamp.distiller import OnlineDistiller

        if key not in self.distillers:
            c = self.config
            self.distillers[key] = OnlineDistiller(hidden, int(c.width), float(c.lr), seed=int(c.seed), device=device,
                                                   precision=c.precision, graphs=bool(c.cuda_graphs),
                                                   side_stream=bool(c.side_stream),
                                                   defer_update=bool(c.defer_update))
            self.counters.groups_live = len(self.distillers)
        return self.distillers[key]
