"""`driftcheck stress --shrink` on the real CPU engine, and the probes catching
each injected fault with the right message."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.engine


def stress(*args: str) -> tuple[int, dict]:
    proc = subprocess.run(
        [sys.executable, "-m", "driftcheck", "stress", "--shrink", "--json", *args],
        capture_output=True, text=True, timeout=900, cwd=os.path.dirname(__file__),
    )
    assert proc.stdout.strip(), proc.stderr[-3000:]
    return proc.returncode, json.loads(proc.stdout)


def _all_problems(result):
    from driftcheck.probes.stress_cli import problems

    return problems(result)


@pytest.mark.parametrize("args", [
    pytest.param(("--examples", "3", "--esamp-beta", "0.8"), id="inproc-eager-esamp"),
    pytest.param(("--examples", "2", "--multiproc", "--compiled"), id="multiproc-compiled"),
])
def test_stress_passes(args, installed_contracts):
    code, result = stress(*args)
    assert code == 0, _all_problems(result)
    engine = result["engine"]
    # the workload really grew and shrank the decode batch, and every step was checked
    assert engine["max_live_rows"] >= 3 and engine["shrink_steps"] >= 1
    assert engine["tap_writes"] == {"0": engine["steps"], "3": engine["steps"]}
    assert sum(e["rows_checked"] for e in result["examples"]) > 20
    for e in result["examples"]:
        assert max(e["max_err"].values()) < 1e-3
    assert result["return_violations"] == []
    # the request kinds covered, caller ids that look like vLLM's own among them (the fixed first
    # schedule: '7_batch', '1_x', '2_x' with n=1, 'q-abcdefgh', 'batch' with n=3), each attributed
    kinds = result["kinds"]
    assert kinds["id like a child id (i_R)"] >= 4 and kinds["id like a reassigned id (R-xxxxxxxx)"] >= 1
    assert kinds["n=1"] >= 4 and kinds["n>1"] >= 2 and kinds["prompt over the token budget (chunked prefill)"] >= 1
    assert result["examples"][0]["violations"] == [] and result["examples"][0]["requests"] == 6
    assert result["seeded"] == {"drawn": False, "why": result["seeded"]["why"]} and "upstream" in result["seeded"]["why"]
    assert result["returns"]["runner.prepare_inputs"] == [installed_contracts["runner.prepare_inputs"]
                                                          .aspects["return_names"].arity]


def test_stale_rows_fault_is_caught():
    code, result = stress("--examples", "2", "--fault", "stale_rows")
    assert code == 1
    found = _all_problems(result)
    assert any("stale rows: the tap read" in p and "live requests" in p for p in found), found


def test_dropped_request_id_mapping_is_caught():
    code, result = stress("--examples", "2", "--fault", "drop_id_map")
    assert code == 1
    found = _all_problems(result)
    assert any("request-id round trip: engine id" in p and "maps to no caller id" in p for p in found), found


def test_silent_tap_trips_the_zero_hit_alarm():
    code, result = stress("--examples", "2", "--fault", "silent_tap")
    assert code == 1
    found = _all_problems(result)
    assert found[0].startswith("zero-hit alarm: hook point 'layer_taps' delivered nothing after 4 decode steps")
    assert "decoder_layer" in found[0]
