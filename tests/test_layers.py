"""The layers import one way only (import-linter contracts in pyproject.toml), and an upward
import breaks the contract: the check can fail."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import driftcheck
import esamp

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
LINT = Path(sys.executable).parent / "lint-imports"


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    # import-linter puts the working directory first on sys.path: it analyses the packages found there
    return subprocess.run([str(LINT), "--config", str(PYPROJECT)], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def _copy_packages(dest: Path) -> Path:
    for package in (driftcheck, esamp):
        shutil.copytree(Path(package.__file__).parent, dest / package.__name__,
                        ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def test_the_installed_package_keeps_its_layers(tmp_path):
    proc = _lint(_copy_packages(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "Contracts: 2 kept, 0 broken." in proc.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    root = _copy_packages(tmp_path)
    install = root / "driftcheck" / "shims" / "install.py"
    text = install.read_text()
    anchor = "from driftcheck.shims.plan import ShimPlan, Unbound, catalog_by_id\n"
    assert anchor in text
    install.write_text(text.replace(anchor, anchor + "from driftcheck.scan import scan_tree  # noqa: F401\n"))
    proc = _lint(root)
    assert proc.returncode != 0
    assert "driftcheck.shims is not allowed to import driftcheck.scan" in proc.stdout
    assert "esamp is not allowed to import driftcheck.readers" in proc.stdout  # through the runtime, too
