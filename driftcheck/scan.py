"""One scan: locate vLLM -> read surfaces -> match contracts -> fingerprint -> shim plan.

`scan_tree` is the static scan (no import of vLLM or torch). `run_live` (`--live`)
adds the live reader's observations, from a child process, and checks that both
readers agree (driftcheck.contracts.matching.disagreements).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field

from driftcheck import env
from driftcheck.contracts.matching import Disagreement, Fingerprint, SurfaceResult, disagreements, match_all
from driftcheck.contracts.observation import SurfaceObservation
from driftcheck.errors import EXIT_OK, EXIT_UNHANDLED_DRIFT, LiveCheckFailed
from driftcheck.readers.observe_static import observe_tree
from driftcheck.readers.source_tree import SourceTree
from driftcheck.shims.plan import ShimPlan, catalog, select_shims

LIVE_TIMEOUT_S = 300


@dataclass
class ScanResult:
    source: str
    distribution: str | None
    version: str | None
    results: list[SurfaceResult]
    fingerprint: Fingerprint
    static_seconds: float
    plan: ShimPlan | None = None  # the shim each hook point gets
    live: dict | None = None  # the live reader's findings, when --live
    disagreements: list[str] = field(default_factory=list)  # static vs live, and failed probes

    @property
    def unhandled(self) -> list[SurfaceResult]:
        """Required surfaces with an unknown contract, or whose hook point no shim can bind."""
        unbound = {u.surface for u in self.plan.unbound} if self.plan else set()
        return [r for r in self.results if r.unhandled or r.surface.id in unbound]

    def shim(self, surface_id: str) -> str:
        """The shim that handles a surface, 'none fits', or '-' (no shim reads it)."""
        if self.plan is None:
            return "-"
        if any(u.surface == surface_id for u in self.plan.unbound):
            return "none fits"
        return self.plan.shim_for(surface_id) or "-"

    @property
    def exit_code(self) -> int:
        return EXIT_UNHANDLED_DRIFT if self.unhandled or self.disagreements else EXIT_OK


def scan_tree(tree: SourceTree) -> ScanResult:
    t0 = time.perf_counter()
    surfaces = catalog()  # with generated shims' contracts, if any
    observations: dict[str, SurfaceObservation] = observe_tree(tree, surfaces)
    results, fingerprint = match_all(observations, surfaces, tree.version)
    return ScanResult(
        source=tree.label,
        distribution=tree.distribution,
        version=tree.version,
        results=results,
        fingerprint=fingerprint,
        static_seconds=time.perf_counter() - t0,
        plan=select_shims(fingerprint.contracts),
    )


# --------------------------------------------------------------------------- --live

def run_live(scan: ScanResult) -> None:
    """Run the live reader in a child process, attach its findings, record disagreements."""
    from driftcheck.models.engine_env import cpu_engine_env

    child_env = {**cpu_engine_env(), **os.environ, env.VLLM_MULTIPROCESSING: "0"}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "driftcheck.readers.live"], capture_output=True, text=True,
                              timeout=LIVE_TIMEOUT_S, env=child_env)
    except subprocess.TimeoutExpired:
        raise LiveCheckFailed(f"live check did not finish in {LIVE_TIMEOUT_S} s") from None
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("DRIFTCHECK_LIVE ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise LiveCheckFailed(f"live check failed (exit {proc.returncode}): {tail}")
    live = json.loads(lines[-1][len("DRIFTCHECK_LIVE "):])
    check_observers_fired(live)
    live["seconds"] = round(time.perf_counter() - t0, 1)
    scan.live = live
    observations = {sid: SurfaceObservation.from_json(o) for sid, o in live.get("observations", {}).items()}
    scan.disagreements = [d.render() for d in compare(scan, observations)]


def check_observers_fired(live: dict) -> None:
    """Observers that never fired would make every live finding vacuous ("passthrough" ids
    from an empty set): the model ran somewhere they could not see."""
    if not live.get("hits"):
        from driftcheck.readers.live import OBSERVED

        raise LiveCheckFailed(f"live check saw no call to {', '.join(OBSERVED)} in {live.get('steps')} "
                              "engine steps: the model ran outside the observed process")


def compare(scan: ScanResult, live: dict[str, SurfaceObservation]) -> list[Disagreement]:
    """Where the imported vLLM contradicts what the static reader read."""
    out = []
    for r in scan.results:
        if r.surface.id in live:
            out += disagreements(r.observation, live[r.surface.id])
    return out
