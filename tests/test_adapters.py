"""adapters/: the normalized views per contract, on plain inputs (pure logic; the engine tests
exercise them on vLLM itself)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from driftcheck.adapters.model import logits_from_hidden, reproduction_error
from driftcheck.adapters.prepare import build_view, step_rows
from driftcheck.adapters.request_ids import Identities, Identity, annotated, identity_of
from driftcheck.adapters.sampler import SAMPLING_EPS, effective_temperature
from driftcheck.contracts.values import ReturnNames


def test_step_rows_prefill_chunks_decodes_and_positions():
    # row 0: decoding (prompt 5 done); row 1: last prefill chunk; row 2: a middle chunk; row 3: whole prompt at once
    sampled, decode, positions = step_rows(computed=[7, 4, 0, 0], scheduled=[1, 4, 3, 6], prefill_len=[5, 8, 10, 6])
    assert sampled == [0, 1, 3]  # the middle chunk samples nothing
    assert decode == [0]
    assert positions == [7, 7, 2, 5]


@given(st.lists(st.tuples(st.integers(0, 50), st.integers(1, 50), st.integers(1, 60)), min_size=1, max_size=20))
def test_step_rows_agrees_with_its_definition(rows):
    computed, scheduled, prefill = zip(*rows)
    sampled, decode, positions = step_rows(computed, scheduled, prefill)
    assert set(decode) <= set(sampled)
    for i, (c, s, p) in enumerate(rows):
        assert (i in sampled) == (c + s >= p)
        assert (i in decode) == (c >= p)
        assert positions[i] == c + s - 1


@pytest.mark.parametrize("names, kwargs", [
    # logits-first (0.11.1+): counts are the shim's argument
    ("(logits_indices, spec_decode_metadata, num_sampled_tokens.max())", {"num_scheduled": [1, 3, 2]}),
    # attn-first (0.10.x-0.11.0): counts come back in the tuple
    ("(attn_metadata, logits_indices, spec_decode_metadata, num_scheduled_tokens, "
     "spec_decode_common_attn_metadata, max_num_scheduled_tokens)", {}),
])
def test_build_view_reads_each_contracts_slots(names, kwargs):
    positions = ReturnNames.parse(names).positions()
    values = {"logits_indices": torch.tensor([0, 3, 5]), "spec_decode_metadata": None,
              "num_scheduled_tokens": [1, 3, 2]}
    result = tuple(values.get(name, object()) for name in ReturnNames.parse(names).elements)
    batch = SimpleNamespace(num_reqs=3, req_ids=["a", "b", "c", None], num_computed_tokens_cpu=[9, 0, 2, 0],
                            num_prompt_tokens=[4, 6, 4, 0])
    view = build_view(SimpleNamespace(input_batch=batch), result, positions, **kwargs)
    assert view.req_ids == ["a", "b", "c"]
    assert torch.equal(view.logits_indices, torch.tensor([0, 3, 5]))
    assert view.num_scheduled_tokens == [1, 3, 2]
    assert view.sampled_rows == [0, 2] and view.decode_rows == [0]  # b is mid-prompt (3 of 6)
    assert view.num_sampled == 2
    assert view.positions == [9, 2, 3]
    assert view.spec_decode is False


def test_effective_temperature_leaves_random_rows_and_neutralises_greedy_ones():
    t = torch.tensor([0.0, SAMPLING_EPS / 2, 0.7, 1.5])
    assert torch.equal(effective_temperature(t), torch.tensor([1.0, 1.0, 0.7, 1.5]))


class _Model(torch.nn.Module):
    def __init__(self, old_signature: bool) -> None:
        super().__init__()
        self.model = SimpleNamespace(norm=lambda h: h * 2)
        self.head = torch.tensor([[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]])  # hidden 2 -> vocab 3
        self.old = old_signature

    def compute_logits(self, hidden, *rest):
        if self.old and not rest:
            raise TypeError("compute_logits() missing 1 required positional argument: 'sampling_metadata'")
        return hidden @ self.head


@pytest.mark.parametrize("old", [False, True], ids=["compute_logits(h)", "compute_logits(h, metadata)"])
def test_logits_from_hidden_is_norm_then_head_on_both_contracts(old):
    hidden = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert torch.equal(logits_from_hidden(_Model(old), hidden), (hidden * 2) @ _Model(old).head)


def test_reproduction_error_is_zero_for_the_rows_themselves_and_none_for_other_rows():
    model = _Model(False)
    deep = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    logits = logits_from_hidden(model, deep)
    assert reproduction_error(model, deep, logits) == 0.0
    assert reproduction_error(model, deep, logits + 0.25) == pytest.approx(0.25)
    assert reproduction_error(model, deep[:1], logits) is None  # the tap read another number of rows


_IDS = st.text(st.sampled_from(list("0123456789_-abq") + ["é", "中", "🙂", " "]), min_size=1, max_size=12)


@given(caller=_IDS, parent=st.one_of(st.none(), _IDS), index=st.one_of(st.none(), st.integers(0, 64)),
       engine_id=_IDS)
def test_identity_comes_from_what_the_front_end_recorded_never_from_the_id(caller, parent, index, engine_id):
    params = SimpleNamespace(extra_args={"esamp_beta": 0.5})
    recorded = annotated(params, caller, parent, index)
    assert params.extra_args == {"esamp_beta": 0.5}  # the caller's own params are never changed
    assert recorded.extra_args["esamp_beta"] == 0.5
    identity = identity_of(engine_id, recorded)
    assert identity == Identity(caller, parent if parent is not None else engine_id, index, known=True)
    # without a record the id is not parsed: the request stands alone, and says it is unknown
    assert identity_of(engine_id, params) == Identity(engine_id, engine_id, None, known=False)


def test_ids_that_look_like_vllm_ids_are_taken_as_sent():
    """The ids a parser of id strings got wrong: '7_batch' (n=1) is not child 7 of 'batch'; '1_x' and
    '2_x' are two requests, not one group; a '-' + 8 characters suffix is part of the id."""
    for caller, engine_id in [("7_batch", "7_batch-abcdefgh"), ("1_x", "1_x-12345678"), ("2_x", "2_x-87654321"),
                              ("q-abcdefgh", "q-abcdefgh-1a2b3c4d")]:
        identity = identity_of(engine_id, annotated(SimpleNamespace(extra_args=None), caller))
        assert (identity.caller, identity.group, identity.child) == (caller, engine_id, None)
    child = identity_of("3_batch-1a2b3c4d", annotated(SimpleNamespace(extra_args=None), "batch", "batch-1a2b3c4d", 3))
    assert (child.caller, child.group, child.child) == ("batch", "batch-1a2b3c4d", 3)


def test_identities_live_from_added_to_finished():
    ids = Identities()
    params = annotated(SimpleNamespace(extra_args=None), "c", "p", 1)
    assert ids.added("e", params) == Identity("c", "p", 1)
    assert ids.finished("e") == Identity("c", "p", 1)
    assert ids.finished("e") == Identity("e", "e", None, known=False)  # finished twice: no longer known
    assert annotated(None, "c") is None  # a pooling request has no sampling params


def test_v2_view_rows_and_positions_follow_the_request_states():
    """Model Runner V2's view (build_view_v2) from a batch whose rows map to state slots out of order:
    row 0 is slot 2 (decoding), row 1 slot 0 (its prefill ends this step); positions from the CPU mirror
    of computed tokens (computed + scheduled - 1)."""
    import types

    import numpy as np

    from driftcheck.adapters.prepare import build_view_v2

    states = types.SimpleNamespace(num_computed_prefill_tokens=np.array([2, 0, 3], dtype=np.int32),
                                   prefill_len=types.SimpleNamespace(np=np.array([5, 4, 3], dtype=np.int32)),
                                   num_computed_tokens_np=np.array([2, 0, 7], dtype=np.int32))
    batch = types.SimpleNamespace(num_reqs=2, req_ids=["a", "b", "c"], idx_mapping_np=np.array([2, 0]),
                                  num_scheduled_tokens=np.array([1, 3, 9]), logits_indices=None)
    view = build_view_v2(types.SimpleNamespace(req_states=states), batch)
    assert view.req_ids == ["a", "b"] and view.num_scheduled_tokens == [1, 3]
    assert view.sampled_rows == [0, 1] and view.decode_rows == [0]
    assert view.num_sampled == 2
    assert view.positions == [7, 4]
