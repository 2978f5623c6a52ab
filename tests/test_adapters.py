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
from driftcheck.adapters.request_ids import RequestIdMap, id_map_for
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


@pytest.mark.parametrize("engine_id, expected", [
    ("q-1a2b3c4d", ("q", "q-1a2b3c4d", None)),
    ("2_q-1a2b3c4d", ("q", "q-1a2b3c4d", 2)),
])
def test_request_ids_reassigned_contract(engine_id, expected):
    ids = id_map_for("request_ids/assign_request_id", "child_ids/index_prefix")
    assert ids == RequestIdMap(reassigned=True, child_prefix=True)
    assert ids.split(engine_id) == expected


def test_request_ids_passthrough_contract():
    ids = id_map_for("request_ids/passthrough", "child_ids/index_prefix")
    assert ids.split("q") == ("q", "q", None)
    assert ids.split("1_q") == ("q", "q", 1)
