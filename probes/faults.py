"""Fault switches: reintroduce a known bug, to prove that a probe catches it.

This is the one seam through which faults enter. Each fault is a set of
patches (driftcheck.patching, the same wrapper protocol the shims use) on the
runtime's own functions; production code has no fault branches. `inject(name)`
must run in the process where the model runs, before the shims bind: the
plugin entry point does it when env.FAULT names a fault (engine processes),
in-process runners call it directly.
"""

from __future__ import annotations

from driftcheck.patching import Patch, apply_all

#: name -> what it breaks (the CLI's --fault choices)
FAULTS = {
    "stale_rows": "index the taps with a persistent scratch buffer sliced to the largest batch seen, not the "
                  "live row count (the decode-shrink bug)",
    "drop_id_map": "forget the request identity: events carry the engine's id where the caller's belongs",
    "silent_tap": "tapped layers keep their buffers but never write them (port hits stay 0)",
    # meaning-changing faults: every shape probe stays green; only the effect probe sees them
    "ignore_fused": "ESamp computes the fused logits, but the draw uses vLLM's unfused ones",
    "deep_from_shallow": "the distiller's deep target is read from the shallow tap (the wrong layer)",
    "shuffle_rows": "the deep rows are shifted by one request before training (misaligned rows)",
    # tensor parallelism: ranks that do not hold the same ESamp state draw different tokens
    "rank_skew": "under TP, rank 1's distillers start from another seed than rank 0's (ranks diverge)",
}
#: The faults `driftcheck explore --check` must catch (the others are the shape probes' business).
MEANING_FAULTS = ("ignore_fused", "deep_from_shallow", "shuffle_rows")

_injected: dict[str, list[Patch]] = {}


def _stale_rows() -> list[Patch]:
    from driftcheck.shims.hook_points import HookPoints

    scratch = {}

    def make(original):
        def live_rows(self, view):
            import torch

            rows = original(self, view)
            old = scratch.get("rows")
            if old is None or old.shape[0] < rows.shape[0]:
                grown = torch.zeros(max(rows.shape[0], 1), dtype=rows.dtype, device=rows.device)
                if old is not None:
                    grown[: old.shape[0]] = old
                scratch["rows"] = old = grown
            old[: rows.shape[0]] = rows
            return old

        return live_rows

    return [Patch(HookPoints, "live_rows", make, __name__)]


def _drop_id_map() -> list[Patch]:
    from driftcheck.adapters import request_ids

    def make(original):
        def identity_of(engine_id, params):
            return request_ids.Identity(engine_id, engine_id, None, known=False)  # what the front-end said is lost

        return identity_of

    return [Patch(request_ids, "identity_of", make, __name__)]


def _silent_tap() -> list[Patch]:
    from driftcheck.shims import layer_taps

    def make(original):
        def attach_tap(layer, index):
            original(layer, index)
            layer._driftcheck_tapped = False  # the buffer exists but is never written

        return attach_tap

    return [Patch(layer_taps, "attach_tap", make, __name__)]


def _ignore_fused() -> list[Patch]:
    from esamp.controller import ESampController

    def make(original):
        def post_filter(self, batch):
            import dataclasses

            # fused (on a copy: the candidate path fuses in place), counted as an intervention ...
            original(self, dataclasses.replace(batch, logits=batch.logits.clone()))
            return None  # ... and dropped: vLLM draws from its own logits

        return post_filter

    return [Patch(ESampController, "post_filter", make, __name__)]


def _training_rows(transform) -> list[Patch]:
    """Where ESamp reads its training rows from (ESampController._sources, every path: the captured step's
    gather and the general step's selection), changed by transform(shallow, deep) -> (shallow, deep), each a
    (tap buffer, row indices) pair."""
    from esamp.controller import ESampController

    def make(original):
        def _sources(self, view, shallow_layer, deep_layer):
            return transform(*original(self, view, shallow_layer, deep_layer))

        return _sources

    return [Patch(ESampController, "_sources", make, __name__)]


def _deep_from_shallow() -> list[Patch]:
    return _training_rows(lambda shallow, deep: (shallow, shallow))


def _shuffle_rows() -> list[Patch]:
    import torch

    # each row's deep target is the next row's: the indices rolled by one
    return _training_rows(lambda shallow, deep: (shallow, (deep[0], torch.roll(deep[1], 1)) if deep[1].shape[0] > 1
                                                 else deep))


def _rank_skew() -> list[Patch]:
    from esamp.groups import Groups

    def make(original):
        def distiller(self, key, hidden, device):
            from driftcheck.shims.hook_points import rank_info

            if key not in self.distillers and rank_info()["rank"] == 1:
                import dataclasses

                self.config = dataclasses.replace(self.config, seed=int(self.config.seed) + 1)
            return original(self, key, hidden, device)

        return distiller

    return [Patch(Groups, "distiller", make, __name__)]


_BUILD = {"rank_skew": _rank_skew, "stale_rows": _stale_rows, "drop_id_map": _drop_id_map, "silent_tap": _silent_tap,
          "ignore_fused": _ignore_fused, "deep_from_shallow": _deep_from_shallow, "shuffle_rows": _shuffle_rows}


def inject(name: str) -> None:
    """Reintroduce the named bug in this process (idempotent)."""
    if name not in FAULTS:
        raise ValueError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}")
    if name not in _injected:
        _injected[name] = apply_all(_BUILD[name]())


def injected() -> list[str]:
    return sorted(_injected)
