"""Drifts: typed differences between what a reader saw and a contract.

A Drift carries its kind (DriftKind), the aspect it concerns, and the old
(contract) and new (observed) values as data: ParamSpecs, Signatures,
ReturnNames, NameLists, strings. `render()` is the one place that turns a
drift into the text the reports print; code that acts on drifts (propose, the
shim plan, the probes) reads the fields, never the text.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from driftcheck.contracts.values import NameList, ParamSpec, ReturnNames


class DriftKind(str, Enum):
    """Every kind of drift the scan names (the README lists each with its meaning)."""

    PARAM_ADDED = "param-added"  # new: ParamSpec
    PARAM_REMOVED = "param-removed"  # old: ParamSpec
    PARAM_RENAMED = "param-renamed"  # old, new: ParamSpec at the same position
    PARAM_REORDERED = "param-reordered"  # old, new: the common names in their two orders
    PARAM_KIND_CHANGED = "param-kind-changed"  # old, new: ParamSpec (plain <-> *args <-> **kwargs)
    DEFAULT_CHANGED = "default-changed"  # old, new: ParamSpec (a default gained or lost)
    DESCRIPTOR_CHANGED = "descriptor-changed"  # old, new: descriptor kind
    RETURN_KIND_CHANGED = "return-kind-changed"  # a single value <-> a tuple, or mixed returns
    RETURN_ARITY_CHANGED = "return-arity-changed"  # the tuple gained or lost elements
    RETURN_REORDERED = "return-reordered"  # same names, other order
    RETURN_RENAMED = "return-renamed"  # same arity, other names
    REQUEST_ID_BEHAVIOUR_CHANGED = "request-id-behaviour-changed"  # old, new: RequestIds
    FIELD_MISSING = "field-missing"  # old: the fields ESamp reads, new: those the class has
    SURFACE_MISSING = "surface-missing"  # the surface is gone
    SURFACE_APPEARED = "surface-appeared"  # an optional surface a contract says is absent is there
    ASPECT_CHANGED = "aspect-changed"  # any other aspect (printed as '<aspect>-changed')
    CONTRACT_OUT_OF_RANGE = "contract-out-of-range"  # a known contract no release shares with the others
    RUNNER_UNBOUND = "runner-unbound"  # the model runner an engine will build has no shims bound


@dataclass(frozen=True)
class Drift:
    kind: DriftKind
    aspect: str
    old: object = None  # what the contract says
    new: object = None  # what was seen (None: not seen)
    note: str = ""  # context that is not a value (e.g. 'not found')

    @property
    def label(self) -> str:
        return f"{self.aspect}-changed" if self.kind is DriftKind.ASPECT_CHANGED else self.kind.value

    @property
    def detail(self) -> str:
        return _DETAIL.get(self.kind, _arrow)(self)

    def render(self) -> str:
        return f"{self.label}: {self.detail}"

    def to_json(self) -> dict:
        return {"kind": self.kind.value, "aspect": self.aspect, "old": _text(self.old), "new": _text(self.new),
                "text": self.render()}


def _text(value):
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, tuple):
        return [_text(v) for v in value]
    return str(value)


def _arrow(d: Drift) -> str:
    return f"{d.old} -> {'(not seen)' if d.new is None else d.new}"


def _param_added(d: Drift) -> str:
    p: ParamSpec = d.new
    return f"{p.star}{p.name} " + ("(with default)" if p.has_default else "(required)")


def _param_removed(d: Drift) -> str:
    return f"{d.old.star}{d.old.name}"


def _param_renamed(d: Drift) -> str:
    return f"{d.old.name} -> {d.new.name}"


def _param_reordered(d: Drift) -> str:
    return f"{', '.join(d.old)} -> {', '.join(d.new)}"


def _param_kind(d: Drift) -> str:
    return f"{d.old.star}{d.old.name} -> {d.new.star}{d.new.name}"


def _default(d: Drift) -> str:
    return f"{d.new.name} " + ("gained" if d.new.has_default else "lost") + " its default"


def _return_arity(d: Drift) -> str:
    old, new = d.old, d.new
    if not (isinstance(old, ReturnNames) and isinstance(new, ReturnNames)):
        return _arrow(d)  # return_arity aspect: 'tuple/2 -> tuple/3'
    a, b = old.elements, new.elements
    if len(b) > len(a) and b[: len(a)] == a:
        return f"trailing element added: {', '.join(b[len(a):])}"
    if len(b) < len(a) and a[: len(b)] == b:
        return f"trailing element removed: {', '.join(a[len(b):])}"
    return f"{len(a)} -> {len(b)} elements: {new}"


def _return_renamed(d: Drift) -> str:
    return "; ".join(f"{a} -> {b}" for a, b in zip(d.old.elements, d.new.elements) if a != b)


def _field_missing(d: Drift) -> str:
    old: NameList = d.old
    return ", ".join(old.missing_from(d.new or NameList()))


def _presence(d: Drift) -> str:
    return d.note or f"expected present={d.old}"


def _out_of_range(d: Drift) -> str:
    return d.note


_DETAIL = {
    DriftKind.PARAM_ADDED: _param_added,
    DriftKind.PARAM_REMOVED: _param_removed,
    DriftKind.PARAM_RENAMED: _param_renamed,
    DriftKind.PARAM_REORDERED: _param_reordered,
    DriftKind.PARAM_KIND_CHANGED: _param_kind,
    DriftKind.DEFAULT_CHANGED: _default,
    DriftKind.RETURN_ARITY_CHANGED: _return_arity,
    DriftKind.RETURN_RENAMED: _return_renamed,
    DriftKind.FIELD_MISSING: _field_missing,
    DriftKind.SURFACE_MISSING: _presence,
    DriftKind.SURFACE_APPEARED: _presence,
    DriftKind.CONTRACT_OUT_OF_RANGE: _out_of_range,
    DriftKind.RUNNER_UNBOUND: _out_of_range,
}
