"""What `_prepare_inputs` returned, as one normalized view of this step's rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class PrepareView:
    """This step's packed batch, whatever the contract returned.

    rows i < num_reqs are requests in input-batch order; the sampler's logits row i
    is request `req_ids[i]`, whose sampled token's hidden state sits at packed
    token index `logits_indices[i]`.
    """

    req_ids: list[str]
    logits_indices: Any  # torch.Tensor [num_reqs] (more with spec decode)
    num_scheduled_tokens: list[int]
    sampled_rows: list[int]  # rows whose sample is kept (not a partial prefill chunk)
    decode_rows: list[int]  # rows generating (not prefill) this step
    positions: list[int]  # per row: sequence position of the token whose hidden state is at logits_indices[i]
    spec_decode: bool
    runner: Any = field(repr=False, default=None)
    batch: Any = field(repr=False, default=None)  # Model Runner V2: the InputBatch this view was built from


def step_rows(computed, scheduled, prefill_len) -> tuple[list[int], list[int], list[int]]:
    """(sampled rows, decode rows, positions) from each row's tokens computed before this step,
    tokens scheduled this step, and prompt (prefill) length. A row samples when this step
    reaches the end of its prefill; it decodes when its prefill was done before the step; its
    position is that of the last token scheduled (whose hidden state the logits row reads).
    Vectorised (numpy): this runs every step, in the host time before the forward is launched."""
    import numpy as np

    c = np.asarray(computed, dtype=np.int64).reshape(-1)
    s = np.asarray(scheduled, dtype=np.int64).reshape(-1)
    p = np.asarray(prefill_len, dtype=np.int64).reshape(-1)
    n = min(len(c), len(s), len(p))
    c, s, p = c[:n], s[:n], p[:n]
    return np.flatnonzero(c + s >= p).tolist(), np.flatnonzero(c >= p).tolist(), (c + s - 1).tolist()


def _ints(values, n: int) -> list[int]:
    """The first n entries of a numpy array, tensor or list of integers, as Python ints."""
    import numpy as np

    return np.asarray(values[:n], dtype=np.int64).reshape(-1).tolist()


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
    scheduled = _ints(num_scheduled, num_reqs)
    sampled, decode, rows_positions = step_rows(batch.num_computed_tokens_cpu[:num_reqs], scheduled,
                                                batch.num_prompt_tokens[:num_reqs])
    return PrepareView(req_ids, logits_indices, scheduled, sampled, decode, rows_positions, spec, runner)


def build_view_v2(runner, batch) -> PrepareView:
    """Model Runner V2: the InputBatch `prepare_inputs` returned, with the per-request prefill progress
    from the runner's request states (read before this step's post-processing advances it). Row i of
    the sampler's logits is request `batch.req_ids[i]`; its state slot is `batch.idx_mapping_np[i]`."""
    import numpy as np

    num_reqs = int(batch.num_reqs)
    req_ids = list(batch.req_ids[:num_reqs])
    slots = batch.idx_mapping_np[:num_reqs]
    states = runner.req_states
    scheduled = _ints(batch.num_scheduled_tokens, num_reqs)
    prefill_done = states.num_computed_prefill_tokens[slots]
    prefill_len = states.prefill_len.np[slots]
    sampled, decode, _ = step_rows(prefill_done, scheduled, prefill_len)
    # positions: from the CPU mirror of computed tokens where the release keeps one
    mirror = getattr(states, "num_computed_tokens_np", None)
    positions = [] if mirror is None else (np.asarray(mirror[slots], dtype=np.int64) + scheduled - 1).tolist()
    spec = int(getattr(batch, "num_draft_tokens", 0) or 0) > 0
    return PrepareView(req_ids, batch.logits_indices, scheduled, sampled, decode, positions, spec, runner, batch)
