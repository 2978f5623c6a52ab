"""The effect probe and its parts: the task's checker, the pass@k estimator, and `driftcheck explore
--check` on the real engine with the trained task model (built on first use, cached), clean and
with each meaning-changing fault, which the shape probes (the stress) do not see."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from driftcheck.explore import Config, metrics, pass_at_k, per_problem
from driftcheck.models.task import EOS, NUM, Problem, correct, eval_problems
from driftcheck.probes.faults import MEANING_FAULTS


@given(n=st.integers(1, 40), data=st.data())
def test_pass_at_k_is_the_probability_that_k_of_n_samples_hold_a_correct_one(n, data):
    c, k = data.draw(st.integers(0, n)), data.draw(st.integers(1, n))
    exact = 1 - math.comb(n - c, k) / math.comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)


def test_the_checker_accepts_exactly_the_subsets_that_add_up():
    rng = random.Random(0)
    for problem in eval_problems(50):
        solutions = set(problem.solutions())
        assert solutions and all(sum(s) == problem.target for s in solutions)
        for _ in range(30):
            picked = rng.sample(problem.numbers, rng.randint(1, 4))
            got = correct(problem, [NUM + v for v in picked] + [EOS])
            assert (got is not None) == (frozenset(picked) in solutions)
        some = sorted(next(iter(solutions)))
        assert correct(problem, [NUM + v for v in some]) is None  # no eos: not finished
        assert correct(problem, [NUM + some[0], NUM + some[0], EOS]) is None  # a number used twice
    assert correct(Problem((1, 2, 3, 4, 5, 6), 7), [NUM + 7, EOS]) is None  # not one of the numbers


def test_distinct_answers_and_paired_differences():
    problems = [Problem((1, 2, 3, 4, 5, 6), 7)] * 2
    a = [[[NUM + 1, NUM + 6, EOS], [NUM + 6, NUM + 1, EOS], [NUM + 3, NUM + 4, EOS], [NUM + 9, EOS]]] * 2
    rows = per_problem(problems, a)
    assert rows[0] == {"n": 4, "correct": 3, "distinct": 2}  # {1, 6} twice is one answer
    m = metrics(rows, base=rows)
    assert m["pass@1"][0] == pytest.approx(0.75) and m["Δpass@1"][:1] == (0.0,) and m["Δdistinct"][0] == 0.0


@pytest.fixture(scope="module")
def task_model():
    from driftcheck.models.task import ensure_task_model

    return str(ensure_task_model())


@pytest.fixture(scope="module")
def vanilla_slice(task_model):
    from driftcheck.explore import CHECK_PROBLEMS, run_config

    from driftcheck.explore import CHECK_BATCH

    return run_config(task_model, Config("vanilla", None), CHECK_PROBLEMS, max_num_seqs=CHECK_BATCH)


@pytest.mark.engine
@pytest.mark.slow
def test_the_effect_probe_passes_on_the_clean_tree(task_model):
    proc = subprocess.run([sys.executable, "-m", "driftcheck", "explore", "--check", "--json"], capture_output=True,
                          text=True, timeout=900, cwd=os.path.dirname(__file__))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["problems"] == []
    f = result["figures"]
    assert f["moved"] >= 0.2 and f["r2"] >= 0.15 > f["r2_shallow"]


@pytest.mark.engine
@pytest.mark.slow
@pytest.mark.parametrize("fault, lost", [
    ("ignore_fused", "the draw does not use the fused logits"),
    ("deep_from_shallow", "it is not predicting the deep state"),
    ("shuffle_rows", "it is not predicting the deep state"),
])
def test_the_effect_probe_catches_each_meaning_changing_fault(fault, lost, vanilla_slice):
    from driftcheck.explore import check

    assert fault in MEANING_FAULTS
    result = check(fault=fault, vanilla=vanilla_slice, log=lambda _: None)
    assert any(lost in p for p in result["problems"]), result
    if fault != "ignore_fused":
        return  # one stress run shows the shape probes green under a meaning fault (suite time); the other
        # two faults change only the rows the distiller trains on (probes/faults.py _step_rows)
    # ... while every shape probe stays green: the stress, with ESamp on and the same fault
    proc = subprocess.run([sys.executable, "-m", "driftcheck", "stress", "--shrink", "--examples", "1",
                           "--esamp-beta", "0.8", "--fault", fault, "--json"], capture_output=True, text=True,
                          timeout=600, cwd=os.path.dirname(__file__))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert json.loads(proc.stdout)["esamp"]["intervention_calls"] > 0
