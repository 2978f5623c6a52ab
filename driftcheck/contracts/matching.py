"""Match observations to contracts; name the drift when none matches; compare two readers.

A surface whose aspects equal a contract's is that contract. Otherwise the
nearest contract (fewest differing aspects, then one catalogued for the
scanned release, then the newest) is diffed aspect by aspect into typed
drifts (driftcheck.contracts.drift). The same aspect comparison serves the
static-versus-live check (`disagreements`) and the shims' bind-time check
against the imported objects.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from driftcheck.contracts.catalog import SURFACES, Contract, Surface
from driftcheck.contracts.drift import Drift, DriftKind
from driftcheck.contracts.observation import SurfaceObservation
from driftcheck.contracts.values import NameList, RequestIds, ReturnNames, Signature

# statuses
BASELINE = "baseline"  # the contract ESamp's reference runtime was validated on
KNOWN = "known"  # a catalogued later contract
UNKNOWN = "UNKNOWN"  # no contract matches: unhandled drift
MISSING = "MISSING"  # the surface is gone: unhandled drift
UNHANDLED = (UNKNOWN, MISSING)


@dataclass
class SurfaceResult:
    surface: Surface
    observation: SurfaceObservation
    contract: Contract | None
    status: str
    drifts: list[Drift] = field(default_factory=list)  # vs the nearest contract (UNKNOWN/MISSING)
    nearest: Contract | None = None
    since_baseline: list[Drift] = field(default_factory=list)  # what moved since ESamp's baseline

    @property
    def unhandled(self) -> bool:
        return self.status in UNHANDLED and self.surface.required


# --------------------------------------------------------------------------- drifts per aspect

def signature_drifts(expected: Signature, seen: Signature) -> list[Drift]:
    old, new = expected.params, seen.params
    old_names, new_names = expected.names, seen.names
    drifts: list[Drift] = []
    added = [p for p in new if p.name not in old_names]
    removed = [p for p in old if p.name not in new_names]
    if len(added) == len(removed) and added and all(
        old_names.index(r.name) == new_names.index(a.name) for r, a in zip(removed, added)
    ):
        drifts += [Drift(DriftKind.PARAM_RENAMED, "signature", r, a) for r, a in zip(removed, added)]
    else:
        drifts += [Drift(DriftKind.PARAM_ADDED, "signature", None, a) for a in added]
        drifts += [Drift(DriftKind.PARAM_REMOVED, "signature", r, None) for r in removed]
    common_old = tuple(n for n in old_names if n in new_names)
    common_new = tuple(n for n in new_names if n in old_names)
    if common_old != common_new:
        drifts.append(Drift(DriftKind.PARAM_REORDERED, "signature", common_old, common_new))
    old_by = {p.name: p for p in old}
    for p in new:
        was = old_by.get(p.name)
        if was is None or was == p:
            continue
        if was.star != p.star:
            drifts.append(Drift(DriftKind.PARAM_KIND_CHANGED, "signature", was, p))
        elif was.has_default != p.has_default:
            drifts.append(Drift(DriftKind.DEFAULT_CHANGED, "signature", was, p))
    return drifts


def return_names_drifts(expected: ReturnNames, seen: ReturnNames) -> list[Drift]:
    def drift(kind):
        return [Drift(kind, "return_names", expected, seen)]

    if seen.is_mixed or not expected.is_tuple or not seen.is_tuple or not expected.elements or not seen.elements:
        return drift(DriftKind.RETURN_KIND_CHANGED)
    old, new = expected.elements, seen.elements
    if sorted(old) == sorted(new):
        return drift(DriftKind.RETURN_REORDERED)
    if len(old) != len(new):
        return drift(DriftKind.RETURN_ARITY_CHANGED)
    return drift(DriftKind.RETURN_RENAMED)


def return_arity_drifts(expected: str, seen: str) -> list[Drift]:
    if (expected == "value") != (seen == "value") or seen.startswith("mixed"):
        return [Drift(DriftKind.RETURN_KIND_CHANGED, "return_arity", expected, seen)]
    return [Drift(DriftKind.RETURN_ARITY_CHANGED, "return_arity", expected, seen)]


def aspect_drifts(aspect: str, expected, seen) -> list[Drift]:
    if seen == expected:
        return []
    if seen is None:
        return [Drift(DriftKind.ASPECT_CHANGED, aspect, expected, None)]
    if aspect == "present":
        kind = DriftKind.SURFACE_MISSING if seen == "no" else DriftKind.SURFACE_APPEARED
        return [Drift(kind, "present", expected, seen)]
    if aspect in ("signature", "leading"):
        return signature_drifts(expected, seen)
    if aspect == "descriptor":
        return [Drift(DriftKind.DESCRIPTOR_CHANGED, aspect, expected, seen)]
    if aspect == "return_names":
        return return_names_drifts(expected, seen)
    if aspect == "return_arity":
        return return_arity_drifts(expected, seen)
    if aspect == "request_ids":
        return [Drift(DriftKind.REQUEST_ID_BEHAVIOUR_CHANGED, aspect, expected, seen)]
    if aspect == "fields":
        return [Drift(DriftKind.FIELD_MISSING, aspect, expected, seen)]
    return [Drift(DriftKind.ASPECT_CHANGED, aspect, expected, seen)]


def with_derived(surface: Surface, aspects: dict) -> dict:
    """Aspects derived from the ones a reader saw, the same for every reader: `leading` is the
    first `options["leading"]` parameters of the signature (a surface whose wrapper passes the
    rest through depends on those only)."""
    if "leading" in surface.aspects and aspects.get("signature") is not None:
        aspects["leading"] = aspects["signature"].head(int(surface.options["leading"]))
    return aspects


def expected_aspects(surface: Surface, contract: Contract) -> dict:
    """A contract's aspects plus the ones every surface of its kind has by default:
    present=yes, and for functions the descriptor kind (a wrapper depends on it)."""
    expected = {"present": "yes"}
    if surface.kind == "function" and contract.aspects.get("present", "yes") == "yes":
        expected["descriptor"] = "instance" if "." in surface.qualname else "function"
    expected.update(contract.aspects)
    return expected


def contract_drifts(surface: Surface, contract: Contract, aspects: dict) -> list[Drift]:
    expected = expected_aspects(surface, contract)
    if aspects.get("present") == "no" and expected["present"] == "yes":
        return [Drift(DriftKind.SURFACE_MISSING, "present", "yes", "no", note="not found")]
    drifts: list[Drift] = []
    for aspect, value in expected.items():
        drifts += aspect_drifts(aspect, value, aspects.get(aspect))
    return drifts


def _matches(surface: Surface, contract: Contract, aspects: dict) -> bool:
    return all(aspects.get(k) == v for k, v in expected_aspects(surface, contract).items())


def match_surface(surface: Surface, obs: SurfaceObservation, version: str | None = None) -> SurfaceResult:
    for contract in surface.contracts:
        if _matches(surface, contract, obs.aspects):
            status = BASELINE if contract is surface.baseline else KNOWN
            since = [] if status == BASELINE else contract_drifts(surface, surface.baseline, obs.aspects)
            return SurfaceResult(surface, obs, contract, status, since_baseline=since)
    # Nearest: fewest differing aspects; then a contract catalogued for this very
    # release (what the user had before the edit); then the newest.
    ranked = sorted(
        enumerate(surface.contracts),
        key=lambda ic: (len(contract_drifts(surface, ic[1], obs.aspects)),
                        not ic[1].seen_in.contains(version), -ic[0]),
    )
    nearest = ranked[0][1]
    drifts = contract_drifts(surface, nearest, obs.aspects)
    status = MISSING if obs.aspects.get("present") == "no" else UNKNOWN
    return SurfaceResult(surface, obs, None, status, drifts, nearest,
                         since_baseline=contract_drifts(surface, surface.baseline, obs.aspects))


@dataclass
class Fingerprint:
    """For each surface, the contract its observation matched (None: unknown)."""

    contracts: dict[str, str | None]

    @property
    def digest(self) -> str:
        blob = json.dumps(self.contracts, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def to_json(self) -> dict:
        return {"digest": self.digest, "contracts": self.contracts}


def match_all(
    observations: dict[str, SurfaceObservation], surfaces=SURFACES, version: str | None = None
) -> tuple[list[SurfaceResult], Fingerprint]:
    results = [match_surface(s, observations[s.id], version) for s in surfaces if s.id in observations]
    fp = Fingerprint({r.surface.id: (r.contract.id if r.contract else None) for r in results})
    return results, fp


# --------------------------------------------------------------------------- one release, all surfaces

@dataclass(frozen=True)
class OutOfRange:
    """A surface whose matched contract no release shares with the contracts the other surfaces
    matched: a fingerprint no release ever had (e.g. one surface drifted back to an old shape)."""

    surface: str
    contract: str
    contract_releases: str  # the contract's release range
    tree_releases: str  # the releases most of the other surfaces' contracts agree on

    def drift(self) -> Drift:
        return Drift(DriftKind.CONTRACT_OUT_OF_RANGE, "seen_in", self.tree_releases, self.contract_releases,
                     note=f"{self.surface} matched {self.contract} (releases {self.contract_releases}), but the "
                          f"other surfaces match releases {self.tree_releases}: no release had this combination")


def consistency(results: list[SurfaceResult]) -> list[OutOfRange]:
    """Cross-surface consistency: for every catalogued release, how many matched contracts it has;
    the releases with the most are the tree's range. A surface whose contract holds none of them is
    out of range. Contracts no catalogued release has (generated for a newer release) take no part."""
    from driftcheck.contracts.releases import RELEASES

    matched = [(r.surface.id, r.contract) for r in results if r.contract is not None and r.contract.seen_in.releases()]
    if not matched:
        return []
    votes = {release: sum(c.seen_in.contains(release) for _, c in matched) for release in RELEASES}
    best = max(votes.values())
    if best == len(matched):
        return []  # one release had every one of these contracts
    agreed = [release for release in RELEASES if votes[release] == best]
    tree = agreed[0] if len(agreed) == 1 else f"{agreed[0]}-{agreed[-1]}"
    return [OutOfRange(sid, c.id, str(c.seen_in), tree) for sid, c in matched
            if not any(c.seen_in.contains(release) for release in agreed)]


# --------------------------------------------------------------------------- two readers, one surface

#: The aspects both readers can see, in the order disagreements are reported.
SHARED_ASPECTS = ("present", "signature", "descriptor", "return_arity", "request_ids", "fields")


@dataclass(frozen=True)
class Disagreement:
    """The imported vLLM contradicts what the static reader read from its source."""

    surface: str
    aspect: str
    static: object
    live: object
    example: str | None = None  # a live value that shows it (e.g. a request id the runner saw)

    def render(self) -> str:
        if self.aspect == "return_arity":
            return f"{self.surface}: returns static={self.static} live={self.live}"
        if self.aspect == "request_ids":
            static = self.static.behaviour if isinstance(self.static, RequestIds) else self.static
            return f"{self.surface}: static={static} live={self.live} ({self.example})"
        if self.aspect == "fields":
            missing = ", ".join(self.static.missing_from(self.live))
            return f"{self.surface}: live InputBatch has no {missing}"
        return f"{self.surface}: {self.aspect} static={self.static} live={self.live}"


def _agrees(aspect: str, static, live) -> bool:
    if aspect == "return_arity":  # live: every shape the engine returned; static: the one the source has
        return static in str(live).split(", ")
    if isinstance(static, RequestIds) and isinstance(live, RequestIds):
        return static.agrees(live)
    if isinstance(static, NameList) and isinstance(live, NameList):
        return not static.missing_from(live)
    return static == live


def disagreements(static: SurfaceObservation, live: SurfaceObservation) -> list[Disagreement]:
    """Every aspect both observations carry on which they differ."""
    out = []
    for aspect in SHARED_ASPECTS:
        if aspect not in live.aspects or aspect not in static.aspects:
            continue
        s, v = static.aspects[aspect], live.aspects[aspect]
        if v is None or s is None or _agrees(aspect, s, v):
            continue
        if aspect == "fields":
            for name in s.missing_from(v):  # one line per missing field
                out.append(Disagreement(static.surface, aspect, NameList((name,)), NameList()))
            continue
        out.append(Disagreement(static.surface, aspect, s, v, live.detail.get("example")))
    return out
