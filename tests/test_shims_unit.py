"""Shim selection, refusal, atomicity and reversibility (no engine started here)."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
from packaging.version import Version

from driftcheck.contracts.catalog import SURFACES_BY_ID
from driftcheck.contracts.releases import RELEASES
from driftcheck.shims import install as shim_install
from driftcheck.shims.plan import HOOK_POINTS, select_shims, shim_modules

REPORTS = Path(__file__).resolve().parent.parent / "reports" / "releases"


def _release_fingerprints() -> dict[str, dict]:
    out = {}
    for path in sorted(REPORTS.glob("*.json")):
        report = json.loads(path.read_text())
        out[report["version"]] = report["fingerprint"]["contracts"]
    return out


def test_every_released_contract_family_has_a_shim():
    fingerprints = _release_fingerprints()
    assert len(fingerprints) == len(RELEASES), sorted(fingerprints)
    for version, contracts in fingerprints.items():
        plan = select_shims(contracts)
        assert plan.bound("v1"), (version, [u.render() for u in plan.unbound["v1"]])
        assert set(plan.selected["v1"]) == set(HOOK_POINTS)
        v = Version(version)
        # Model Runner V2: none before 0.12; its shims bind its (logits, input_batch) sampler, from 0.18
        assert ("v2" in plan.runners) == (v >= Version("0.12.0")), version
        if "v2" in plan.runners:
            assert plan.bound("v2") == (v >= Version("0.18.0")), (version, [u.render() for u in plan.unbound["v2"]])
    chosen = {v: select_shims(c).selected["v1"]["prepare_view"].__name__.rsplit(".", 1)[-1]
              for v, c in fingerprints.items()}
    assert chosen["0.10.0"] == chosen["0.11.0"] == "prepare_attn_first"
    assert chosen["0.11.1"] == chosen["0.32.0"] == chosen["0.33.0"] == "prepare_logits_first"


def test_every_catalogued_contract_is_handled_by_some_shim():
    """...or the catalog says why not: a runner family the release lacks (present="no"), or a
    contract marked unhandled with its reason (Model Runner V2 before 0.18)."""
    handled = {(s, c) for m in shim_modules() for s, cs in m.HANDLES.items() for c in cs}
    for sid in {s for m in shim_modules() for s in m.HANDLES}:
        surface = SURFACES_BY_ID[sid]
        for contract in surface.contracts:
            if (sid, contract.id) in handled:
                continue
            absent_family = surface.runner is not None and str(contract.aspects.get("present")) == "no"
            assert absent_family or contract.meaning.get("unhandled"), (sid, contract.id)


def test_selection_follows_contracts_not_versions():
    """A release mixing an old prepare contract with new sampler contracts gets both right shims."""
    contracts = dict(_release_fingerprints()["0.32.0"])
    contracts["runner.prepare_inputs"] = "prepare/attn-first-6"
    plan = select_shims(contracts)
    assert plan.unbound["v1"] == []
    assert plan.selected["v1"]["prepare_view"].__name__.endswith("prepare_attn_first")
    assert plan.selected["v1"]["post_filter"].__name__.endswith("sampler_post_filter")


def test_unknown_contract_is_unbound_and_named():
    contracts = dict(_release_fingerprints()["0.32.0"])
    contracts["sampler.sample"] = None
    plan = select_shims(contracts)
    assert [(u.hook_point, u.surface) for u in plan.unbound["v1"]] == [("post_filter", "sampler.sample")]
    assert "post_filter" not in plan.selected["v1"]
    with pytest.raises(shim_install.ShimRefused) as err:
        shim_install.install(plan)
    msg = str(err.value)
    assert "sampler.sample" in msg and "unknown contract" in msg and "driftcheck scan" in msg
    assert not shim_install.installed()


def test_drifted_source_is_refused_with_the_surface_named(drifted):
    drifted.edit("vllm/v1/sample/sampler.py", "    def sample(\n        self,\n", "    @staticmethod\n    def sample(\n")
    plan = select_shims(drifted.scan().fingerprint.contracts)
    with pytest.raises(shim_install.ShimRefused, match=r"surface sampler\.sample shows an unknown contract"):
        shim_install.install(plan)


# --------------------------------------------------------------------------- atomicity (real vLLM classes)

def _targets(plan):
    """(owner, name) of every attribute the plan's shims wrap."""
    return [(p.owner, p.name) for m in plan.modules() for p in m.patches(plan.context)]


def _snapshot(targets):
    return [(owner, name, inspect.getattr_static(owner, name), name in vars(owner)) for owner, name in targets]


@pytest.fixture
def installed_plan(installed_scan):
    plan = installed_scan.plan
    yield plan
    shim_install.uninstall()


def test_failure_in_third_wrapper_leaves_vllm_unchanged(installed_plan):
    targets = _targets(installed_plan)
    assert len(targets) >= 5
    before = _snapshot(targets)
    with pytest.raises(shim_install.ShimError, match="injected failure at patch 3"):
        shim_install.install(installed_plan, fail_at=3)
    assert _snapshot(targets) == before
    assert not shim_install.installed()


def test_apply_twice_is_a_noop_and_remove_restores_exactly(installed_plan):
    targets = _targets(installed_plan)
    before = _snapshot(targets)
    shim_install.install(installed_plan)
    wrapped = _snapshot(targets)
    assert all(w[2] is not b[2] for w, b in zip(wrapped, before))
    shim_install.install(installed_plan)  # no-op
    assert _snapshot(targets) == wrapped
    shim_install.uninstall()
    assert _snapshot(targets) == before


def test_descriptor_kinds_survive_wrapping(installed_plan):
    from vllm.v1.sample.sampler import Sampler

    shim_install.install(installed_plan)
    # Sampler.sample is an instance method in 0.32.0; wrapped, it must still be one
    assert not isinstance(inspect.getattr_static(Sampler, "sample"), staticmethod)
    assert getattr(inspect.getattr_static(Sampler, "sample"), "__driftcheck_shim__", "").endswith("sampler_post_filter")


def test_timed_adds_the_host_seconds_inside_it_and_lets_an_error_through():
    import time

    from driftcheck.shims.hook_points import timed

    into = {}
    with timed("hooks.x", into):
        time.sleep(0.01)
    with pytest.raises(ValueError):  # a hook's error is the hook's, not swallowed by the timing
        with timed("hooks.x", into):
            raise ValueError("boom")
    first = into["hooks.x"]
    assert 0.01 <= first < 5
    with timed("hooks.x", into), timed("hooks.y", into):  # nested ranges each count their own time
        time.sleep(0.01)
    assert into["hooks.x"] - first >= into["hooks.y"] >= 0.01
