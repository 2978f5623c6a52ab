"""Match observations to contracts; name the drift when none matches.

A surface whose aspects equal a contract's is that contract. Otherwise the
nearest contract (fewest differing aspects, the newest on ties) is diffed
aspect by aspect, and each difference gets a drift class a human can act on:
param-added, param-removed, param-renamed, param-reordered, default-changed,
descriptor-changed, return-kind-changed, return-arity-changed,
return-reordered, return-renamed, request-id-behaviour-changed,
field-missing, surface-missing, <aspect>-changed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from packaging.version import InvalidVersion, Version

from driftcheck.catalog import SURFACES, Contract, Surface
from driftcheck.observation import SurfaceObservation

# statuses
BASELINE = "baseline"  # the contract ESamp's reference runtime was validated on
KNOWN = "known"  # a catalogued later contract
UNKNOWN = "UNKNOWN"  # no contract matches: unhandled drift
MISSING = "MISSING"  # the surface is gone: unhandled drift
UNHANDLED = (UNKNOWN, MISSING)


@dataclass(frozen=True)
class Drift:
    kind: str
    detail: str

    def render(self) -> str:
        return f"{self.kind}: {self.detail}"


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


# --------------------------------------------------------------------------- signature strings

def parse_signature(text: str) -> list[tuple[str, str, bool]]:
    """'(a, b=, *c, **d)' -> [(name, kind, has_default)]; kind is '', '*' or '**'."""
    inner = text.strip()[1:-1].strip()
    out = []
    for part in (p.strip() for p in inner.split(",")) if inner else []:
        kind = "**" if part.startswith("**") else "*" if part.startswith("*") else ""
        name = part.lstrip("*")
        has_default = name.endswith("=")
        out.append((name.rstrip("="), kind, has_default))
    return out


def render_signature(params: list[tuple[str, str, bool]]) -> str:
    return "(" + ", ".join(f"{k}{n}{'=' if d else ''}" for n, k, d in params) + ")"


def signature_drifts(expected: str, seen: str) -> list[Drift]:
    old, new = parse_signature(expected), parse_signature(seen)
    old_names, new_names = [p[0] for p in old], [p[0] for p in new]
    drifts: list[Drift] = []
    added = [p for p in new if p[0] not in old_names]
    removed = [p for p in old if p[0] not in new_names]
    if len(added) == len(removed) and added and all(
        old_names.index(r[0]) == new_names.index(a[0]) for r, a in zip(removed, added)
    ):
        for r, a in zip(removed, added):
            drifts.append(Drift("param-renamed", f"{r[0]} -> {a[0]}"))
    else:
        for a in added:
            drifts.append(Drift("param-added", f"{a[1]}{a[0]}" + (" (with default)" if a[2] else " (required)")))
        for r in removed:
            drifts.append(Drift("param-removed", f"{r[1]}{r[0]}"))
    common_old = [n for n in old_names if n in new_names]
    common_new = [n for n in new_names if n in old_names]
    if common_old != common_new:
        drifts.append(Drift("param-reordered", f"{', '.join(common_old)} -> {', '.join(common_new)}"))
    old_by = {p[0]: p for p in old}
    for p in new:
        if p[0] in old_by and old_by[p[0]] != p:
            was = old_by[p[0]]
            if was[1] != p[1]:
                drifts.append(Drift("param-kind-changed", f"{was[1]}{p[0]} -> {p[1]}{p[0]}"))
            elif was[2] != p[2]:
                drifts.append(Drift("default-changed", f"{p[0]} " + ("gained" if p[2] else "lost") + " its default"))
    return drifts


def _names(text: str) -> list[str]:
    if text in ("value", ""):
        return []
    inner = text[1:-1] if text.startswith("(") and text.endswith(")") else text
    return [n.strip() for n in inner.split(",")]


def return_names_drifts(expected: str, seen: str) -> list[Drift]:
    if seen.startswith("mixed/"):
        return [Drift("return-kind-changed", f"{expected} -> {seen}")]
    old, new = _names(expected), _names(seen)
    if not old or not new:
        return [Drift("return-kind-changed", f"{expected} -> {seen}")]
    if sorted(old) == sorted(new):
        return [Drift("return-reordered", f"{expected} -> {seen}")]
    if len(new) > len(old) and new[: len(old)] == old:
        return [Drift("return-arity-changed", f"trailing element added: {', '.join(new[len(old):])}")]
    if len(new) < len(old) and old[: len(new)] == new:
        return [Drift("return-arity-changed", f"trailing element removed: {', '.join(old[len(new):])}")]
    if len(new) != len(old):
        return [Drift("return-arity-changed", f"{len(old)} -> {len(new)} elements: {seen}")]
    renamed = [f"{a} -> {b}" for a, b in zip(old, new) if a != b]
    return [Drift("return-renamed", "; ".join(renamed))]


def return_arity_drifts(expected: str, seen: str) -> list[Drift]:
    if (expected == "value") != (seen == "value") or seen.startswith("mixed"):
        return [Drift("return-kind-changed", f"{expected} -> {seen}")]
    return [Drift("return-arity-changed", f"{expected} -> {seen}")]


def aspect_drifts(aspect: str, expected: str, seen: str | None) -> list[Drift]:
    if seen == expected:
        return []
    if seen is None:
        return [Drift(f"{aspect}-changed", f"{expected} -> (not seen)")]
    if aspect == "present":
        return [Drift("surface-missing" if seen == "no" else "surface-appeared", f"expected present={expected}")]
    if aspect == "signature":
        return signature_drifts(expected, seen)
    if aspect == "descriptor":
        return [Drift("descriptor-changed", f"{expected} -> {seen}")]
    if aspect == "return_names":
        return return_names_drifts(expected, seen)
    if aspect == "return_arity":
        return return_arity_drifts(expected, seen)
    if aspect == "request_ids":
        return [Drift("request-id-behaviour-changed", f"{expected} -> {seen}")]
    if aspect == "fields":
        missing = [f for f in _names(expected) if f not in _names(seen)]
        return [Drift("field-missing", ", ".join(missing))]
    return [Drift(f"{aspect}-changed", f"{expected} -> {seen}")]


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
        return [Drift("surface-missing", "not found")]
    drifts: list[Drift] = []
    for aspect, value in expected.items():
        drifts += aspect_drifts(aspect, value, aspects.get(aspect))
    return drifts


def _matches(surface: Surface, contract: Contract, aspects: dict) -> bool:
    return all(aspects.get(k) == v for k, v in expected_aspects(surface, contract).items())


def seen_in(contract: Contract, version: str | None) -> bool:
    """Whether `version` lies in the contract's catalogued range ('a-b' or 'a')."""
    if not version:
        return False
    try:
        v = Version(version)
        lo, _, hi = contract.seen_in.partition("-")
        return Version(lo) <= v <= Version(hi or lo)
    except InvalidVersion:
        return False


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
                        not seen_in(ic[1], version), -ic[0]),
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
