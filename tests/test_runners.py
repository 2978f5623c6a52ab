"""Which model runner an engine builds, read from each release's real source, and the runner guard
on the real CPU engine: a plan that does not cover the runner vLLM constructs refuses there."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from driftcheck.contracts.runners import Architecture, cpu_runner, gpu_runner
from driftcheck.readers.source_tree import fetch_release
from driftcheck.scan import scan_tree

QWEN2, LLAMA = Architecture("Qwen2ForCausalLM"), Architecture("LlamaForCausalLM")
QWEN2_MOE = Architecture("Qwen2MoeForCausalLM", is_moe=True)
MIXTRAL = Architecture("MixtralForCausalLM", is_moe=True)


def _runners(scan, platform="cuda"):
    return {v.architecture: v.runner for v in scan.verdicts if v.platform == platform}


@pytest.mark.parametrize("release, env_value, expected", [
    ("0.11.0", "", {"Qwen2ForCausalLM": "v1"}),  # no V2 at all
    ("0.20.0", "", {"Qwen2ForCausalLM": "v1", "LlamaForCausalLM": "v1"}),  # env-only opt-in
    ("0.20.0", "1", {"Qwen2ForCausalLM": "v2", "LlamaForCausalLM": "v2"}),
    ("0.24.0", "", {"Qwen2ForCausalLM": "v1", "LlamaForCausalLM": "v2"}),  # allow-list
    ("0.25.0", "", {"Qwen2ForCausalLM": "v2", "LlamaForCausalLM": "v2", "MixtralForCausalLM": "v1",
                    "Qwen2MoeForCausalLM": "v2"}),  # dense by default; MoE only if allow-listed
    ("0.27.1", "0", {"Qwen2ForCausalLM": "v1", "LlamaForCausalLM": "v1"}),  # the env var still wins
    ("0.32.0", "", {"Qwen2ForCausalLM": "v2", "LlamaForCausalLM": "v2", "MixtralForCausalLM": "v2"}),
])
def test_the_scan_says_which_runner_a_cuda_engine_builds(release, env_value, expected):
    scan = scan_tree(fetch_release(release), [QWEN2, LLAMA, MIXTRAL, QWEN2_MOE], env_value)
    got = _runners(scan)
    assert {a: got[a] for a in expected} == expected
    assert set(_runners(scan, "cpu").values()) == {"v1"}  # the CPU worker builds the V1 runner either way
    assert scan.exit_code == 0  # and every runner that will run is bound


def test_the_allow_list_is_read_from_the_source():
    selection = next(r for r in scan_tree(fetch_release("0.24.0")).results if r.surface.id == "runner.selection")
    assert selection.contract.id == "runner_select/allow-list"
    assert {"LlamaForCausalLM", "Qwen3ForCausalLM", "MistralForCausalLM"} <= set(selection.observation.detail["allow_list"])
    assert "Qwen2ForCausalLM" not in selection.observation.detail["allow_list"]


def test_a_chosen_runner_without_bound_hooks_is_unhandled_drift():
    """0.15.0 has an opt-in Model Runner V2 whose sampler no shim binds: fine while nobody opts in,
    exit 1 naming the runner and its unbound surfaces once VLLM_USE_V2_MODEL_RUNNER=1."""
    tree = fetch_release("0.15.0")
    assert scan_tree(tree, env_value="").exit_code == 0
    scan = scan_tree(tree, env_value="1")
    assert scan.exit_code == 1
    drift = scan.runner_drifts[0].render()
    assert drift.startswith("runner-unbound: a cuda engine builds Model Runner V2 for Qwen2ForCausalLM")
    assert "sampler_v2.call" in drift


def test_rule_evaluation_edges():
    assert gpu_runner("allow-list-dense", Architecture("Qwen3ForCausalLM", quantized=True), None,
                      ("Qwen3ForCausalLM",)).runner == "v1"
    assert gpu_runner("dense-default", MIXTRAL, None, ()).runner == "v1"
    assert cpu_runner("default-all", QWEN2, "1", cpu_v2=True).runner == "v2"
    assert cpu_runner("default-all", QWEN2, "1", cpu_v2=False).runner == "v1"
    with pytest.raises(ValueError):
        gpu_runner("some-new-rule", QWEN2, None, ())


def test_architecture_from_a_model_directory(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["Qwen2MoeForCausalLM"], "num_experts": 60}))
    assert Architecture.from_model_dir(tmp_path) == Architecture("Qwen2MoeForCausalLM", is_moe=True)


_BUILD_ENGINE = """
import json, os, sys
if __name__ == "__main__":
    import esamp.runtime
    from vllm import LLM
    from driftcheck.models.engine_env import tiny_engine_kwargs
    from driftcheck.models.tiny import ensure_tiny_model
    LLM(model=str(ensure_tiny_model()), enforce_eager=True, **tiny_engine_kwargs())
    print("ENGINE BUILT")
"""


@pytest.mark.engine
@pytest.mark.parametrize("multiproc", ["0", "1"], ids=["inproc", "multiproc"])
def test_a_plan_that_does_not_cover_the_built_runner_refuses_in_the_engine_process(multiproc, installed_scan, tmp_path):
    """The plan binds Model Runner V2 only (its V1 post-filter surface is unknown) and expects V2 on
    this platform, so the import binds; the CPU worker then builds the V1 runner: refused there."""
    from driftcheck.models.engine_env import cpu_engine_env
    from driftcheck.shims.plan import select_shims

    contracts = dict(installed_scan.fingerprint.contracts)
    contracts["sampler.sample"] = None
    plan = select_shims(contracts)
    plan.expected = {"cpu": ["v2"], "cuda": ["v2"]}
    assert plan.bound("v2") and not plan.bound("v1")
    script = tmp_path / "build.py"
    script.write_text(_BUILD_ENGINE)
    env = {**os.environ, **cpu_engine_env(), "DRIFTCHECK_PLAN": plan.serialize(),
           "VLLM_ENABLE_V1_MULTIPROCESSING": multiproc}
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, env=env,
                          cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "ENGINE BUILT" not in out
    assert "ShimRefused: vLLM is building V1 GPUModelRunner (vllm.v1.worker.cpu_model_runner.CPUModelRunner)" in out
    assert "surface sampler.sample shows an unknown contract" in out
