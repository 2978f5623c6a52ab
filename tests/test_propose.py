"""`driftcheck propose` on drifted copies of the installed vLLM's real source."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from vllm_drift import PREPARE_DRIFTS, RUNNER, shadow_vllm

from driftcheck import propose as gen
from driftcheck.scan import scan_tree
from driftcheck.readers.source_tree import open_tree

SAMPLER = "v1/sample/sampler.py"
TOPK = "v1/sample/ops/topk_topp_sampler.py"


def _propose(tmp_path, edits):
    src = shadow_vllm(tmp_path / "vllm-src", edits)
    scan = scan_tree(open_tree(source=str(src)))
    return src, scan, *gen.propose(scan)


def _selected_with(out_dir, src, monkeypatch):
    monkeypatch.setenv("DRIFTCHECK_SHIM_PATH", str(out_dir))
    return scan_tree(open_tree(source=str(src)))


@pytest.mark.parametrize("drift", sorted(PREPARE_DRIFTS))
def test_prepare_drifts_get_a_complete_shim_that_binds(drift, tmp_path, monkeypatch):
    src, scan, proposals, notes = _propose(tmp_path, {RUNNER: PREPARE_DRIFTS[drift]})
    assert "runner.prepare_inputs" in [r.surface.id for r in scan.unhandled]  # the drift is real
    assert not notes and len(proposals) == 1
    p = proposals[0]
    assert p.nearest == "prepare_logits_first" and not p.todos and p.claimed == ["runner.prepare_inputs"]
    gen.write(proposals, tmp_path / "gen")
    rescan = _selected_with(tmp_path / "gen", src, monkeypatch)
    assert not rescan.unhandled
    assert rescan.plan.selected["v1"]["prepare_view"].__name__.endswith(p.name)
    # the generated test module passes as written
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          str(tmp_path / "gen" / f"test_{p.name}.py")], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-2000:]


@pytest.mark.engine
@pytest.mark.parametrize("drift", ["return-reordered"])
def test_generated_prepare_shim_passes_the_probes_on_the_live_engine(drift, tmp_path):
    """Dropped in unchanged: import esamp.runtime binds, and the shrink stress with ESamp at β=0.8
    passes on the drifted engine. Without the shim the same run refuses. One drift live (the returned
    values reordered: the shim must read them by name); every drift in PREPARE_DRIFTS gets its shim
    generated, bound and its generated test run above (test_prepare_drifts_get_a_complete_shim_that_binds)."""
    src, _, proposals, _ = _propose(tmp_path, {RUNNER: PREPARE_DRIFTS[drift]})
    gen.write(proposals, tmp_path / "gen")
    env = {**os.environ, "PYTHONPATH": str(src)}
    cmd = [sys.executable, "-m", "driftcheck", "stress", "--shrink", "--examples", "2", "--esamp-beta", "0.8",
           "--json"]
    refused = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert refused.returncode != 0 and "runner.prepare_inputs" in refused.stderr
    bound = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600,
                           env={**env, "DRIFTCHECK_SHIM_PATH": str(tmp_path / "gen")})
    assert bound.returncode == 0, bound.stderr[-2000:]
    result = json.loads(bound.stdout[bound.stdout.index("{"):])
    assert result["counters"]["prepare_views"] > 0 and result["esamp"]["intervention_calls"] > 0


def test_method_made_static_drops_self_from_a_dedicated_wrapper(tmp_path, monkeypatch):
    edit = [("    def sample(\n        self,\n        logits: torch.Tensor,",
             "    @staticmethod\n    def sample(\n        logits: torch.Tensor,")]
    src, scan, proposals, notes = _propose(tmp_path, {SAMPLER: edit})
    (p,) = proposals
    assert p.nearest == "sampler_post_filter" and not p.todos
    assert "def sample(logits, sampling_metadata, *args, **kwargs):" in p.code
    assert "original(logits, sampling_metadata, *args, **kwargs)" in p.code
    gen.write(proposals, tmp_path / "gen")
    assert _selected_with(tmp_path / "gen", src, monkeypatch).plan.selected["v1"]["post_filter"].__name__.endswith(p.name)


def test_a_shared_wrapper_made_static_is_left_to_a_human(tmp_path, monkeypatch, capsys):
    edit = [("    def forward_native(\n        self,\n", "    @staticmethod\n    def forward_native(\n")]
    src, scan, proposals, _ = _propose(tmp_path, {TOPK: edit})
    (p,) = proposals
    assert p.todos and "wraps several methods" in p.todos[0]
    assert "topk_topp.forward_native" not in p.claimed  # never selected for a contract it cannot handle
    from click.testing import CliRunner

    from driftcheck.cli import main

    out = tmp_path / "gen"
    res = CliRunner().invoke(main, ["propose", "--source", str(src), "--out", str(out), "--dry-run", "--diff"])
    assert res.exit_code == 1 and gen.TODO in res.output and "+++ " in res.output
    assert not out.exists()  # --dry-run writes nothing


def test_a_renamed_parameter_is_renamed_in_the_wrapper_only(tmp_path, monkeypatch):
    edit = [("        num_scheduled_tokens: np.ndarray,\n    ) -> tuple[",
             "        tokens_per_request: np.ndarray,\n    ) -> tuple[")]  # signature only: a static check
    src, scan, proposals, notes = _propose(tmp_path, {RUNNER: edit})
    (p,) = proposals
    assert not p.todos, p.todos
    assert "def _prepare_inputs(self, scheduler_output, tokens_per_request, *args, **kwargs):" in p.code
    assert "original(self, scheduler_output, tokens_per_request, *args, **kwargs)" in p.code
    assert "num_scheduled=tokens_per_request" in p.code  # the keyword is build_view's, not the parameter
    gen.write(proposals, tmp_path / "gen")
    assert _selected_with(tmp_path / "gen", src, monkeypatch).plan.selected["v1"]["prepare_view"].__name__.endswith(p.name)
