"""One scan: locate vLLM -> read surfaces -> match contracts -> fingerprint.

`scan_tree` is the static scan (no import of vLLM or torch). The live part
(`--live`) adds observations from driftcheck.live_reader and checks that both
readers agree.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from driftcheck.catalog import surfaces
from driftcheck.errors import EXIT_OK, EXIT_UNHANDLED_DRIFT
from driftcheck.matching import Fingerprint, SurfaceResult, match_all
from driftcheck.observation import SurfaceObservation
from driftcheck.observe_static import observe_tree
from driftcheck.shims.plan import select_shims
from driftcheck.source_tree import SourceTree


@dataclass
class ScanResult:
    source: str
    distribution: str | None
    version: str | None
    results: list[SurfaceResult]
    fingerprint: Fingerprint
    static_seconds: float
    plan: object = None  # driftcheck.shims.plan.ShimPlan: the shim each hook point gets
    live: dict | None = None  # live reader's findings, when --live
    disagreements: list[str] = field(default_factory=list)  # static vs live

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
    catalog = surfaces()  # with generated shims' contracts, if any
    observations: dict[str, SurfaceObservation] = observe_tree(tree, catalog)
    results, fingerprint = match_all(observations, catalog, tree.version)
    plan = select_shims(fingerprint.contracts)
    return ScanResult(
        source=tree.label,
        distribution=tree.distribution,
        version=tree.version,
        results=results,
        fingerprint=fingerprint,
        static_seconds=time.perf_counter() - t0,
        plan=plan,
    )
