"""One scan: locate vLLM -> read surfaces -> match contracts -> fingerprint.

`scan_tree` is the static scan (no import of vLLM or torch). The live part
(`--live`) adds observations from driftcheck.live_reader and checks that both
readers agree.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from driftcheck.catalog import SURFACES
from driftcheck.errors import EXIT_OK, EXIT_UNHANDLED_DRIFT
from driftcheck.matching import Fingerprint, SurfaceResult, match_all
from driftcheck.observation import SurfaceObservation
from driftcheck.observe_static import observe_tree
from driftcheck.source_tree import SourceTree


@dataclass
class ScanResult:
    source: str
    distribution: str | None
    version: str | None
    results: list[SurfaceResult]
    fingerprint: Fingerprint
    static_seconds: float
    live: dict | None = None  # live reader's findings, when --live
    disagreements: list[str] = field(default_factory=list)  # static vs live

    @property
    def unhandled(self) -> list[SurfaceResult]:
        return [r for r in self.results if r.unhandled]

    @property
    def exit_code(self) -> int:
        return EXIT_UNHANDLED_DRIFT if self.unhandled or self.disagreements else EXIT_OK


def scan_tree(tree: SourceTree) -> ScanResult:
    t0 = time.perf_counter()
    observations: dict[str, SurfaceObservation] = observe_tree(tree, SURFACES)
    results, fingerprint = match_all(observations, SURFACES, tree.version)
    return ScanResult(
        source=tree.label,
        distribution=tree.distribution,
        version=tree.version,
        results=results,
        fingerprint=fingerprint,
        static_seconds=time.perf_counter() - t0,
    )
