"""ESamp asked for without `import esamp.runtime`, and bad per-request ESamp settings, on the real
CPU engine in both process modes.

- `additional_config={"esamp": {"enable": True}}` alone binds the shims (the plugin sees the engine
  config, shims/esamp_request.py), exactly as the import would: every hook point bound where the
  model runs, ESamp gated, trained and intervened; or it refuses, naming the surface.
- A malformed β is rejected at admission, for that request alone; the engine keeps serving the
  requests before and after it (before the fix the next generate() on the same LLM hung).
"""

from __future__ import annotations

import json
import math

import pytest

pytestmark = pytest.mark.engine

GOOD = {"esamp_beta": 0.8}
BAD = [{"esamp_beta": "abc"}, {"esamp_beta": math.nan}, {"esamp_beta": 1e9}, {"esamp_beta": -1.0},
       {"esamp_beta": True}, {"esamp_bta": 0.8}]
HOOK_POINTS = {"prepare_view", "post_filter", "layer_taps", "request_events", "request_identity", "engine_process",
               "runner_guard"}


def _run(options: dict, env: dict | None = None):
    from conftest import engine_run_child

    return engine_run_child(options, env)


def _result(run) -> dict:
    assert run.returncode == 0 and run.result is not None, run.stderr[-3000:]
    return run.result


@pytest.mark.parametrize("multiproc", [False, True], ids=["inproc", "multiproc"])
def test_esamp_config_alone_binds_the_shims_and_bad_requests_are_rejected_alone(multiproc):
    entries = [GOOD, *BAD, GOOD, None]
    run = _result(_run({"multiproc": multiproc, "shims": "auto", "esamp": {"enable": True}, "admission": entries}))
    outcomes = run["outcomes"]
    assert len(outcomes) == len(entries)
    for entry, outcome in zip(entries, outcomes):
        if entry in BAD:
            assert "error" in outcome, (entry, outcome)
            assert "ESampRequestError: " in outcome["error"] and "esamp_b" in outcome["error"], outcome
        else:  # before and after the bad ones: served, n=2 samples of 6 tokens
            assert "tokens" in outcome, (entry, outcome)
            assert [len(t) for t in outcome["tokens"]] == [6, 6]
    engine = [s for s in run["stats"] if s["counters"]["prepare_views"]]
    assert len(engine) == 1
    stats = engine[0]
    assert (stats["pid"] != run["main_pid"]) == multiproc
    assert set(stats["bound"]) == HOOK_POINTS  # bound where the model runs, without the import
    e = stats["esamp"]
    assert e["enabled"] and e["gate_passed"] and e["train_steps"] > 0 and e["intervention_calls"] > 0
    assert stats["counters"]["requests_added"] == 2 * 3  # the three good requests, n=2 each; no bad one


def test_beta_on_an_engine_without_esamp_is_rejected():
    """β > 0 on an engine started without ESamp would silently sample vanilla."""
    run = _result(_run({"multiproc": False, "admission": [{"esamp_beta": 0.8}, {"esamp_beta": 0.0}, None]}))
    first, zero, none = run["outcomes"]
    assert "ESampRequestError: " in first["error"] and "started without it" in first["error"]
    assert "tokens" in zero and "tokens" in none


@pytest.mark.parametrize("multiproc", [False, True], ids=["inproc", "multiproc"])
def test_esamp_config_alone_refuses_when_a_hook_cannot_bind(multiproc, installed_scan):
    """A plan (handed down, as a parent would) in which the V1 prepare view has no shim: the engine
    config that enables ESamp stops the start with ShimRefused naming the surface."""
    plan = json.loads(installed_scan.plan.serialize())
    shim = plan["selected"]["v1"].pop("prepare_view")
    plan["unbound"]["v1"].append(["prepare_view", "runner.prepare_inputs", None, shim.rsplit(".", 1)[-1]])
    proc = _run({"multiproc": multiproc, "shims": "auto", "esamp": {"enable": True}, "admission": [GOOD]},
                env={"DRIFTCHECK_PLAN": json.dumps(plan)})
    assert proc.returncode != 0
    assert "ShimRefused" in proc.stderr and "runner.prepare_inputs" in proc.stderr, proc.stderr[-2000:]
    assert "DRIFTCHECK_RUN" not in proc.stdout
