"""What `_prepare_inputs` returned, as one normalized view of this step's rows."""

from __future__ import annotations

from functools import cached_property
from typing import Any


class PrepareView:
    """This step's packed batch, whatever the contract returned.

    rows i < num_reqs are requests in input-batch order; the sampler's logits row i
    is request `req_ids[i]`, whose sampled token's hidden state sits at packed
    token index `logits_indices[i]`.

    Built before the forward is launched (host time the device waits for wherever the runner prepares a step only
    after the last one's tokens came back), so building it copies a few small integer arrays and nothing else;
    the per-row lists (`sampled_rows`, `decode_rows`, `positions`, `num_scheduled_tokens`) are derived from those
    copies when first read, in the sampling hook, while the forward runs. The copies keep the view exact even if
    the runner advances its own arrays before then.
    """

    def __init__(self, req_ids: list[str], logits_indices, computed, scheduled, prefill_len, spec_decode: bool,
                 runner: Any = None, batch: Any = None, position_base=None, positions_known: bool = True) -> None:
        self.req_ids = req_ids
        self.logits_indices = logits_indices  # torch.Tensor [num_reqs] (more with spec decode)
        self.spec_decode = spec_decode
        self.runner = runner
        self.batch = batch  # Model Runner V2: the InputBatch this view was built from
        # per row, np.int64 copies: tokens computed before this step (prefill progress on V2), tokens scheduled
        # this step, prompt (prefill) length; `position_base`: where a row's position is counted from if not
        # `computed` (V2's mirror of computed tokens); positions_known False: the release keeps no such count
        self._computed, self._scheduled, self._prefill = computed, scheduled, prefill_len
        self._position_base = computed if position_base is None else position_base
        self._positions_known = positions_known

    def __repr__(self) -> str:
        return f"PrepareView({len(self.req_ids)} rows, spec_decode={self.spec_decode})"

    @cached_property
    def num_sampled(self) -> int:
        """How many rows sample this step (cheap: no list; a plain decode step has them all)."""
        import numpy as np

        return int(np.count_nonzero(self._computed + self._scheduled >= self._prefill))

    @cached_property
    def num_scheduled_tokens(self) -> list[int]:
        return self._scheduled.tolist()

    @cached_property
    def _rows(self) -> tuple[list[int], list[int], list[int]]:
        return step_rows(self._computed, self._scheduled, self._prefill)

    @property
    def sampled_rows(self) -> list[int]:
        """Rows whose sample is kept (not a partial prefill chunk)."""
        return self._rows[0]

    @property
    def decode_rows(self) -> list[int]:
        """Rows generating (not prefill) this step."""
        return self._rows[1]

    @cached_property
    def positions(self) -> list[int]:
        """Per row: the sequence position of the token whose hidden state is at logits_indices[i] ([] where the
        release keeps no count of computed tokens on the host)."""
        if not self._positions_known:
            return []
        return (self._position_base + self._scheduled - 1).tolist()


def step_rows(computed, scheduled, prefill_len) -> tuple[list[int], list[int], list[int]]:
    """(sampled rows, decode rows, positions) from each row's tokens computed before this step,
    tokens scheduled this step, and prompt (prefill) length. A row samples when this step
    reaches the end of its prefill; it decodes when its prefill was done before the step; its
    position is that of the last token scheduled (whose hidden state the logits row reads)."""
    import numpy as np

    c = np.asarray(computed, dtype=np.int64).reshape(-1)
    s = np.asarray(scheduled, dtype=np.int64).reshape(-1)
    p = np.asarray(prefill_len, dtype=np.int64).reshape(-1)
    n = min(len(c), len(s), len(p))
    c, s, p = c[:n], s[:n], p[:n]
    return np.flatnonzero(c + s >= p).tolist(), np.flatnonzero(c >= p).tolist(), (c + s - 1).tolist()


def _ints(values, n: int):
    """The first n entries of a numpy array, tensor or list of integers, as a new np.int64 array (a copy)."""
    import numpy as np

    return np.array(values[:n], dtype=np.int64).reshape(-1)


def build_view(runner, result: tuple, positions: dict[str, int], num_scheduled=None) -> PrepareView:
    """V1 runner: `result` is what `_prepare_inputs` returned; `positions` maps names to tuple
    slots (the contract's ReturnNames.positions())."""
    batch = runner.input_batch
    num_reqs = batch.num_reqs
    req_ids = list(batch.req_ids[:num_reqs])
    logits_indices = result[positions["logits_indices"]]
    spec = result[positions["spec_decode_metadata"]] is not None
    if num_scheduled is None:
        num_scheduled = result[positions["num_scheduled_tokens"]]
    return PrepareView(req_ids, logits_indices, _ints(batch.num_computed_tokens_cpu, num_reqs),
                       _ints(num_scheduled, num_reqs), _ints(batch.num_prompt_tokens, num_reqs), spec, runner)


def build_view_v2(runner, batch) -> PrepareView:
    """Model Runner V2: the InputBatch `prepare_inputs` returned, with the per-request prefill progress
    from the runner's request states (read before this step's post-processing advances it). Row i of
    the sampler's logits is request `batch.req_ids[i]`; its state slot is `batch.idx_mapping_np[i]`."""
    import numpy as np

    num_reqs = int(batch.num_reqs)
    req_ids = list(batch.req_ids[:num_reqs])
    slots = batch.idx_mapping_np[:num_reqs]
    states = runner.req_states
    # positions: from the CPU mirror of computed tokens where the release keeps one
    mirror = getattr(states, "num_computed_tokens_np", None)
    spec = int(getattr(batch, "num_draft_tokens", 0) or 0) > 0
    return PrepareView(req_ids, batch.logits_indices,
                       np.asarray(states.num_computed_prefill_tokens[slots], dtype=np.int64),
                       _ints(batch.num_scheduled_tokens, num_reqs),
                       np.asarray(states.prefill_len.np[slots], dtype=np.int64), spec, runner, batch,
                       position_base=None if mirror is None else np.asarray(mirror[slots], dtype=np.int64),
                       positions_known=mirror is not None)
