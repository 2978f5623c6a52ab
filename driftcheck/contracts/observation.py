"""What a reader saw of one surface.

Both readers produce these, so matching never knows which reader spoke: the
static reader (libcst over source) and the live reader (inspect over the
imported module, plus observers on a running engine) each return one
SurfaceObservation per surface, whose aspects are typed values
(driftcheck.contracts.values). FunctionObservation and ClassObservation are the
static reader's raw facts that its aspects are computed from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from driftcheck.contracts.values import Signature, parse_aspect, render_aspects

# inspect.Parameter kinds, spelled as in inspect.
POSITIONAL_ONLY = "POSITIONAL_ONLY"
POSITIONAL_OR_KEYWORD = "POSITIONAL_OR_KEYWORD"
VAR_POSITIONAL = "VAR_POSITIONAL"
KEYWORD_ONLY = "KEYWORD_ONLY"
VAR_KEYWORD = "VAR_KEYWORD"


@dataclass(frozen=True)
class Param:
    name: str
    kind: str = POSITIONAL_OR_KEYWORD
    has_default: bool = False
    default: str | None = None  # source text of the default
    annotation: str | None = None

    def render(self) -> str:
        prefix = {VAR_POSITIONAL: "*", VAR_KEYWORD: "**"}.get(self.kind, "")
        return f"{prefix}{self.name}{'=' if self.has_default else ''}"


@dataclass(frozen=True)
class ReturnShape:
    """One `return` statement: a tuple of `arity` elements, or a single value (arity None)."""

    arity: int | None
    elements: tuple[str, ...] = ()  # a name per tuple element ('?' where it has none)

    def render(self) -> str:
        if self.arity is None:
            return self.elements[0] if self.elements else "value"
        return "(" + ", ".join(self.elements) + ")"


@dataclass(frozen=True)
class Assignment:
    """An assignment to a watched attribute (e.g. `request.request_id = ...`)."""

    function: str  # qualified name of the function it is in
    target: str
    value: str
    in_loop: bool
    value_kind: str  # 'name' | 'fstring' | 'call' | 'other'


@dataclass(frozen=True)
class FunctionObservation:
    qualname: str
    where: str  # 'vllm/v1/sample/sampler.py:93'
    descriptor: str  # instance | staticmethod | classmethod | property | function
    params: tuple[Param, ...]  # without self/cls
    return_annotation: str | None = None
    annotation_arity: int | None = None  # arity of a tuple[...] annotation, else None
    returns: tuple[ReturnShape, ...] = ()
    calls: tuple[str, ...] = ()
    assignments: tuple[Assignment, ...] = ()
    defined_in: str = ""  # class that defines it, when inherited
    source: str = field(default="", repr=False, compare=False)  # the function's own text
    #: in source order, what the body refers to: attribute names read ("argmax_invariant") and
    #: calls as their dotted name with "(" ("self.topk_topp_sampler(")
    mentions: tuple[str, ...] = field(default=(), repr=False, compare=False)
    #: (dotted callee, call text) for each call whose value is assigned ("self.norm", "self.norm(x, r)")
    assigned_calls: tuple[tuple[str, str], ...] = field(default=(), repr=False, compare=False)

    def signature(self) -> Signature:
        return Signature.of_params(self.params)


@dataclass(frozen=True)
class ClassObservation:
    qualname: str
    where: str
    bases: tuple[str, ...]
    members: tuple[tuple[str, str], ...]  # (name, descriptor kind)
    fields: tuple[str, ...]  # self.X assigned in __init__ plus class-level annotations


@dataclass
class SurfaceObservation:
    """Everything the catalog asked a reader to look at for one surface."""

    surface: str
    reader: str  # 'static' | 'live'
    found: bool
    where: str = ""
    aspects: dict = field(default_factory=dict)  # aspect name -> typed value (contracts.values)
    detail: dict = field(default_factory=dict)  # raw facts for the report (JSON-able)
    note: str = ""

    def to_json(self) -> dict:
        return {"surface": self.surface, "reader": self.reader, "found": self.found, "where": self.where,
                "aspects": render_aspects(self.aspects), "detail": self.detail, "note": self.note}

    @classmethod
    def from_json(cls, data: dict) -> SurfaceObservation:
        """The inverse of to_json: how a live observation crosses from the live child process."""
        aspects = {k: parse_aspect(k, v) for k, v in (data.get("aspects") or {}).items()}
        return cls(data["surface"], data["reader"], data["found"], data.get("where", ""), aspects,
                   data.get("detail") or {}, data.get("note", ""))
