"""One scan: locate vLLM -> read surfaces -> match contracts -> fingerprint -> shim plan.

`scan_tree` is the static scan (no import of vLLM or torch). `run_live` (`--live`)
adds the live reader's observations, from a child process, and checks that both
readers agree (driftcheck.contracts.matching.disagreements).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from driftcheck import env
from driftcheck.child import result_of, run_module
from driftcheck.contracts.drift import Drift, DriftKind
from driftcheck.contracts.matching import (Disagreement, Fingerprint, OutOfRange, SurfaceResult, consistency,
                                           disagreements, match_all)
from driftcheck.contracts.observation import SurfaceObservation
from driftcheck.contracts.runners import ESAMP_ARCHITECTURES, NAMES, Architecture, Verdict, cpu_runner, gpu_runner
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
    plan: ShimPlan | None = None  # the shim each hook point gets, per runner
    verdicts: list[Verdict] = field(default_factory=list)  # which runner an engine builds, per platform and arch
    live: dict | None = None  # the live reader's findings, when --live
    disagreements: list[str] = field(default_factory=list)  # static vs live, and failed probes

    @property
    def expected_runners(self) -> set[str]:
        """The runners an engine is expected to build, on any platform, for the architectures asked."""
        return {v.runner for v in self.verdicts}

    @property
    def unhandled(self) -> list[SurfaceResult]:
        """Required surfaces with an unknown contract, or whose hook point no shim can bind, on a
        runner an engine is expected to build (a runner nobody builds does not block)."""
        expected = self.expected_runners
        unbound = {u.surface for r, us in (self.plan.unbound.items() if self.plan else ()) if r in expected for u in us}
        return [r for r in self.results
                if (r.unhandled and (r.surface.runner is None or r.surface.runner in expected))
                or r.surface.id in unbound]

    @property
    def runner_drifts(self) -> list[Drift]:
        """A runner an engine will build with hooks driftcheck cannot bind: the largest silent drift."""
        out = []
        for v in self.verdicts:
            if self.plan is not None and not self.plan.bound(v.runner):
                missing = ", ".join(sorted({u.surface for u in self.plan.unbound.get(v.runner, [])})) or "no shims"
                out.append(Drift(DriftKind.RUNNER_UNBOUND, "runner", None, v.runner,
                                 note=f"a {v.platform} engine builds {NAMES[v.runner]} for {v.architecture} ({v.why}); "
                                      f"unbound: {missing}"))
        return out

    @property
    def out_of_range(self) -> list[OutOfRange]:
        """Surfaces whose contract no release shares with the others' (cross-surface consistency)."""
        return consistency(self.results)

    def shim(self, surface_id: str) -> str:
        """The shim that handles a surface, 'none fits', or '-' (no shim reads it)."""
        if self.plan is None:
            return "-"
        if any(u.surface == surface_id for u in self.plan.all_unbound()):
            return "none fits"
        return self.plan.shim_for(surface_id) or "-"

    @property
    def exit_code(self) -> int:
        unhandled = self.unhandled or self.runner_drifts or self.disagreements or self.out_of_range
        return EXIT_UNHANDLED_DRIFT if unhandled else EXIT_OK


def scan_tree(tree: SourceTree, architectures: list[Architecture] | None = None,
              env_value: str | None = None) -> ScanResult:
    """The static scan. `architectures`: the models to say the runner for (default: the ones ESamp
    supports); `env_value`: VLLM_USE_V2_MODEL_RUNNER (default: this process's environment)."""
    t0 = time.perf_counter()
    surfaces = catalog()  # with generated shims' contracts, if any
    observations: dict[str, SurfaceObservation] = observe_tree(tree, surfaces)
    results, fingerprint = match_all(observations, surfaces, tree.version)
    scan = ScanResult(
        source=tree.label,
        distribution=tree.distribution,
        version=tree.version,
        results=results,
        fingerprint=fingerprint,
        static_seconds=0.0,
        plan=select_shims(fingerprint.contracts),
    )
    if env_value is None:
        env_value = os.environ.get(env.VLLM_USE_V2_MODEL_RUNNER)
    scan.verdicts = runner_verdicts(scan, architectures or [Architecture(a) for a in ESAMP_ARCHITECTURES], env_value)
    scan.plan.expected = {p: sorted({v.runner for v in scan.verdicts if v.platform == p}) for p in ("cuda", "cpu")}
    scan.static_seconds = time.perf_counter() - t0
    return scan


def runner_verdicts(scan: ScanResult, architectures: list[Architecture], env_value: str | None) -> list[Verdict]:
    """Which runner a CUDA and a CPU engine build for each architecture, by the matched selection rule
    (none when the rule is an unknown contract: that surface is then an unhandled drift itself)."""
    selection = next((r for r in scan.results if r.surface.id == "runner.selection"), None)
    if selection is None or selection.contract is None:
        return []
    rule = selection.contract.meaning["rule"]
    allow = selection.observation.detail.get("allow_list")
    cpu_v2 = str((scan.plan.context.contract("runner_v2.cpu_runner").aspects.get("present", "no")
                  if scan.fingerprint.contracts.get("runner_v2.cpu_runner") else "no")) == "yes"
    out = []
    for arch in architectures:
        out.append(gpu_runner(rule, arch, env_value, tuple(allow) if allow else None))
        out.append(cpu_runner(rule, arch, env_value, cpu_v2))
    return out


# --------------------------------------------------------------------------- --live

def run_live(scan: ScanResult) -> None:
    """Run the live reader in a child process, attach its findings, record disagreements."""
    from driftcheck.models.engine_env import cpu_engine_env

    child_env = {**cpu_engine_env(), **os.environ, env.VLLM_MULTIPROCESSING: "0"}
    t0 = time.perf_counter()
    live = result_of(run_module("driftcheck.readers.live", [], "DRIFTCHECK_LIVE", timeout=LIVE_TIMEOUT_S,
                                env=child_env), "live check")
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
