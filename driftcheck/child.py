"""Run a driftcheck module in a fresh process and read its result: one JSON object on a stdout line
that starts with a tag. Used by every command whose engine work runs in a child (scan --live,
stress, explore, the engine checks), so that shims and engines never leak into the caller.

Output goes to files, not pipes: vLLM's engine processes inherit the child's stdout/stderr and
may outlive it by seconds, and a pipe would keep the caller waiting for them. The child runs in a
neutral directory (a checkout on sys.path would shadow the installed package).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass

from driftcheck.errors import LiveCheckFailed


@dataclass
class ChildRun:
    returncode: int  # 124 when it timed out (and was killed)
    result: dict | None  # the tagged JSON, when the child exited 0 and printed it
    stdout: str
    stderr: str
    timed_out_after: float | None = None  # seconds, when it timed out

    @property
    def tail(self) -> str:
        """The child's last stderr line (what went wrong), or that it timed out."""
        if self.timed_out_after is not None:
            return f"timed out after {self.timed_out_after:.0f} s"
        return (self.stderr.strip().splitlines() or ["no output"])[-1][-400:]


def run_module(module: str, args: list[str], tag: str, *, timeout: float, env: dict | None = None,
               python: str = sys.executable) -> ChildRun:
    """`python -m module *args` (this interpreter unless `python` names another, e.g. a compat venv's);
    the JSON after `tag` on its last such stdout line."""
    with tempfile.TemporaryDirectory(prefix="driftcheck-child-") as tmp:
        out_path, err_path = os.path.join(tmp, "out"), os.path.join(tmp, "err")
        with open(out_path, "w") as out, open(err_path, "w") as err:
            try:
                proc = subprocess.run([python, "-m", module, *args], stdout=out, stderr=err, text=True,
                                      timeout=timeout, cwd=tmp, env=env)
                code = proc.returncode
            except subprocess.TimeoutExpired:
                code = None
        with open(out_path, errors="replace") as f:
            stdout = f.read()
        with open(err_path, errors="replace") as f:
            stderr = f.read()
    if code is None:
        return ChildRun(124, None, stdout, stderr, timed_out_after=timeout)
    lines = [ln for ln in stdout.splitlines() if ln.startswith(tag + " ")]
    result = json.loads(lines[-1][len(tag) + 1:]) if code == 0 and lines else None
    return ChildRun(code, result, stdout, stderr)


def result_of(run: ChildRun, what: str) -> dict:
    """The child's result, or LiveCheckFailed ("<what> failed (exit N): <its last stderr line>")."""
    if run.result is None:
        if run.timed_out_after is not None:
            raise LiveCheckFailed(f"{what} did not finish: {run.tail}")
        raise LiveCheckFailed(f"{what} failed (exit {run.returncode}): {run.tail}")
    return run.result
