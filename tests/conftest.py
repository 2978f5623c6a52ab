"""Shared fixtures: a copy of the real installed vLLM's surface files to drift."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from driftcheck.scan import scan_tree
from driftcheck.readers.source_tree import locate_installed


@pytest.fixture(scope="session")
def installed_tree():
    return locate_installed()


@pytest.fixture(scope="session")
def installed_scan(installed_tree):
    return scan_tree(installed_tree)


def catalogued_contracts(version: str) -> dict:
    """surface id -> the contract the catalog says `version` has (by the contracts' release ranges)."""
    from driftcheck.contracts.catalog import SURFACES

    out = {}
    for s in SURFACES:
        hits = [c for c in s.contracts if c.seen_in.contains(version)]
        assert len(hits) <= 1, (s.id, [c.id for c in hits])  # ranges of one surface never overlap
        if hits:
            out[s.id] = hits[0]
    return out


@pytest.fixture(scope="session")
def installed_contracts(installed_tree):
    """The contracts the catalog says the installed release has (tests that hold for any release)."""
    return catalogued_contracts(installed_tree.version)


@pytest.fixture(scope="session")
def surface_files(installed_tree, installed_scan):
    """Every file the scan of the installed vLLM read (scan_tree caches each read)."""
    files = [rel for rel, text in installed_tree._cache.items() if text is not None]
    return sorted(set(files) | {"vllm/__init__.py", "vllm/_version.py"})


class DriftedTree:
    """A copy of the installed vLLM's surface files that a test edits."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def edit(self, relpath: str, old: str, new: str, count: int = 1) -> None:
        path = self.root / relpath
        text = path.read_text()
        assert old in text, f"{old!r} not in {relpath}: the real source moved, update the test"
        path.write_text(text.replace(old, new, count))

    def scan(self):
        from driftcheck.readers.source_tree import open_directory

        return scan_tree(open_directory(self.root))


@pytest.fixture
def drifted(tmp_path, installed_tree, surface_files) -> DriftedTree:
    for rel in surface_files:
        dest = tmp_path / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(installed_tree.root / rel, dest)
    return DriftedTree(tmp_path)


def engine_run_child(options: dict, env: dict | None = None):
    """The tiny model on a real engine in a fresh process (probes/engine_run.py): a child.ChildRun."""
    from driftcheck.child import run_module

    return run_module("driftcheck.probes.engine_run", [json.dumps(options)], "DRIFTCHECK_RUN", timeout=600,
                      env={**os.environ, **(env or {})})


def _engine_run(options: dict) -> dict:
    """The tiny model on a real engine in a fresh process (probes/engine_run.py); its JSON result."""
    run = engine_run_child(options)
    assert run.returncode == 0 and run.result is not None, run.stderr[-3000:]
    return run.result


@pytest.fixture(scope="session")
def vanilla():
    """Tokens of the default workload on vLLM without any shim (same seeds)."""
    return _engine_run({"multiproc": False, "eager": True, "shims": False})


@pytest.fixture(scope="session")
def engine_run():
    """Run the tiny model on a real engine: engine_run(options) -> result (see probes/engine_run.py)."""
    return _engine_run
