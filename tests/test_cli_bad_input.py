"""Bad input: one clear line, a documented exit code, no traceback, nothing half-written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import pytest

from driftcheck.errors import EXIT_BAD_INPUT, EXIT_FETCH_FAILED, EXIT_OK, EXIT_UNHANDLED_DRIFT


def run_cli(*args, env=None, cwd=os.path.dirname(__file__)):
    proc = subprocess.run(
        [sys.executable, "-m", "driftcheck", *args],
        capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=cwd, timeout=300,
    )
    return proc


def assert_one_line_error(proc, code, needle):
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("driftcheck: error: ") and needle in lines[0], lines[0]


def test_scan_installed_json_and_markdown(tmp_path, installed_tree, installed_contracts, installed_scan):
    md = tmp_path / "out" / "scan.md"
    proc = run_cli("scan", "--json", "--markdown", str(md))
    assert proc.returncode == EXIT_OK, proc.stderr
    report = json.loads(proc.stdout)
    assert report["version"] == installed_tree.version and report["exit_code"] == 0
    assert {s["surface"] for s in report["surfaces"]} >= {"runner.prepare_inputs", "engine.request_ids"}
    prepare = installed_contracts["runner.prepare_inputs"].id
    shim = installed_scan.shim("runner.prepare_inputs")
    assert f"| `runner.prepare_inputs` | known | {prepare} | {shim} |" in md.read_text()
    assert report["shims"]["unbound"] == {"v1": [], "v2": []}
    assert {s["surface"]: s["shim"] for s in report["surfaces"]}["sampler.sample"] == "sampler_post_filter"


def test_drifted_tree_exits_1_and_names_the_surface(drifted):
    drifted.edit("vllm/v1/sample/ops/topk_topp_sampler.py", "def random_sample(", "def random_sample_v2(")
    proc = run_cli("scan", "--source", str(drifted.root))
    assert proc.returncode == EXIT_UNHANDLED_DRIFT
    assert "1 unhandled drift: topk_topp.random_sample" in " ".join(proc.stdout.split())


def test_not_a_vllm_tree(tmp_path):
    assert_one_line_error(run_cli("scan", "--source", str(tmp_path)), EXIT_BAD_INPUT, "not a vLLM source tree")


def test_missing_directory(tmp_path):
    assert_one_line_error(run_cli("scan", "--source", str(tmp_path / "nope")), EXIT_BAD_INPUT, "not a directory")


def test_non_zip_wheel(tmp_path):
    wheel = tmp_path / "vllm-0.0.0-py3-none-any.whl"
    wheel.write_text("this is not a zip")
    assert_one_line_error(run_cli("scan", "--wheel", str(wheel)), EXIT_BAD_INPUT, "not a wheel")


def test_truncated_wheel(tmp_path, installed_tree, surface_files):
    good = tmp_path / "vllm-0.32.0-py3-none-any.whl"
    with zipfile.ZipFile(good, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel in surface_files:
            zf.write(installed_tree.root / rel, rel)
    assert run_cli("scan", "--wheel", str(good)).returncode == EXIT_OK
    data = good.read_bytes()
    bad = tmp_path / "truncated.whl"
    bad.write_bytes(data[: len(data) // 2])
    assert_one_line_error(run_cli("scan", "--wheel", str(bad)), EXIT_BAD_INPUT, "wheel")


def test_wheel_without_vllm(tmp_path):
    wheel = tmp_path / "other-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("other/__init__.py", "")
    assert_one_line_error(run_cli("scan", "--wheel", str(wheel)), EXIT_BAD_INPUT, "not a vLLM wheel")


def test_unparsable_surface_file(drifted):
    drifted.edit("vllm/v1/sample/sampler.py", "    def sample(\n", "    def sample(((\n")
    proc = run_cli("scan", "--source", str(drifted.root))
    assert_one_line_error(proc, EXIT_BAD_INPUT, "cannot parse vllm/v1/sample/sampler.py")


def test_not_a_release_number(tmp_path):
    proc = run_cli("scan", "--vllm-version", "latest-please", env={"DRIFTCHECK_CACHE": str(tmp_path)})
    assert_one_line_error(proc, EXIT_BAD_INPUT, "not a release number")


def test_network_failure_while_fetching(tmp_path):
    """An index that cannot be reached is exit 3, and nothing is left in the cache."""
    env = {
        "DRIFTCHECK_CACHE": str(tmp_path),
        "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
        "PIP_EXTRA_INDEX_URL": "",
        "PIP_FIND_LINKS": "",
        "PIP_RETRIES": "0",
        "PIP_TIMEOUT": "2",
        "PIP_CONFIG_FILE": os.devnull,
    }
    proc = run_cli("scan", "--vllm-version", "0.10.0", env=env)
    assert_one_line_error(proc, EXIT_FETCH_FAILED, "could not reach the package index")
    assert list((tmp_path / "wheels").glob("*")) == []


@pytest.mark.network
def test_unknown_release(tmp_path):
    proc = run_cli("scan", "--vllm-version", "0.0.999", env={"DRIFTCHECK_CACHE": str(tmp_path)})
    assert_one_line_error(proc, EXIT_BAD_INPUT, "unknown vLLM release 0.0.999")


def test_no_vllm_installed(tmp_path):
    """A Python without vLLM: the CLI with `find_spec` answering that vllm is not there."""
    code = (
        "import importlib.util, sys; importlib.util.find_spec = lambda name, *a: None; "
        "from driftcheck.cli import main; sys.argv=['driftcheck','scan']; main()"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=os.path.dirname(__file__))
    assert_one_line_error(proc, EXIT_BAD_INPUT, "no vLLM installed")


def test_conflicting_sources(tmp_path):
    proc = run_cli("scan", "--source", str(tmp_path), "--vllm-version", "0.10.0")
    assert_one_line_error(proc, EXIT_BAD_INPUT, "at most one of")


def test_markdown_not_written_on_bad_input(tmp_path):
    md = tmp_path / "report.md"
    proc = run_cli("scan", "--source", str(tmp_path / "missing"), "--markdown", str(md))
    assert proc.returncode == EXIT_BAD_INPUT
    assert not md.exists()


@pytest.mark.parametrize("args, needle", [
    (["bench", "throughput", "--shape", "no-such-shape"], "unknown shape 'no-such-shape'"),
    (["bench", "throughput", "--esamp-setting", "precision=bf16"], "the value is not JSON"),
    (["bench", "throughput", "--esamp-setting", 'precision="fp8"'], "['precision'] must be one of"),
    (["bench", "throughput", "--esamp-setting", "widht=64"], "unknown setting(s) widht"),
    (["compat", "--releases", "9.9.9"], "unknown release(s): 9.9.9"),
    (["propose", "--out", __file__, "--dry-run"], "exists and is not a directory"),
])
def test_new_commands_refuse_bad_input_in_one_line(args, needle):
    assert_one_line_error(run_cli(*args), EXIT_BAD_INPUT, needle)


def test_a_broken_generated_shim_is_named_not_a_traceback(tmp_path):
    (tmp_path / "broken_shim.py").write_text("HOOK_POINT = 'prepare_view'\nraise ValueError('half written')\n")
    proc = run_cli("shims", env={"DRIFTCHECK_SHIM_PATH": str(tmp_path)})
    assert_one_line_error(proc, EXIT_BAD_INPUT, "broken_shim.py does not load: ValueError: half written")
