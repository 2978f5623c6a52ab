"""Typed aspect values: what a reader saw of one aspect of a surface, as data.

The catalog writes contracts as short, readable strings ("(logits, temp=)",
"(logits_indices, spec_decode_metadata)"); `parse_aspect` turns each into its
value type once, when the contract is built. The readers build the same types
directly (the static reader from libcst nodes, the live reader from imported
objects), so matching compares values, and nothing downstream parses text.
`str(value)` is the string the reports print.

  Signature     parameters without self/cls: names, var-arg stars, defaults
  ReturnNames   a single value, or a tuple with a name per element
  NameList      fields, members, bases, modules: an ordered list of names
  RequestIds    passthrough | reassigned [by Class.method | inline]
  everything else: plain strings ("yes"/"no", descriptor kinds, module paths)
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Iterable

# --------------------------------------------------------------------------- descriptors

DESCRIPTORS = ("instance", "staticmethod", "classmethod", "property", "function")


def descriptor_from_decorators(decorators: Iterable[str], in_class: bool) -> str:
    """The descriptor kind a def gets from its decorators (dotted names; the last part counts)."""
    if not in_class:
        return "function"
    names = {d.rsplit(".", 1)[-1] for d in decorators}
    for kind in ("staticmethod", "classmethod", "property", "cached_property"):
        if kind in names:
            return "property" if kind == "cached_property" else kind
    return "instance"


def descriptor_of(raw) -> str:
    """The descriptor kind of a class attribute as `inspect.getattr_static` returns it."""
    if isinstance(raw, staticmethod):
        return "staticmethod"
    if isinstance(raw, classmethod):
        return "classmethod"
    if isinstance(raw, property) or type(raw).__name__ == "cached_property":
        return "property"
    return "instance"


# --------------------------------------------------------------------------- signatures

@dataclass(frozen=True)
class ParamSpec:
    """One parameter as contracts compare it: name, '*'/'**' for var-args, and whether it has a default."""

    name: str
    star: str = ""  # '' | '*' | '**'
    has_default: bool = False

    def render(self) -> str:
        return f"{self.star}{self.name}{'=' if self.has_default else ''}"

    def __str__(self) -> str:
        return self.render()


_STAR = {"VAR_POSITIONAL": "*", "VAR_KEYWORD": "**"}


@dataclass(frozen=True)
class Signature:
    params: tuple[ParamSpec, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Signature:
        """'(a, b=, *c, **d)'."""
        inner = text.strip()
        if not (inner.startswith("(") and inner.endswith(")")):
            raise ValueError(f"not a signature: {text!r}")
        inner = inner[1:-1].strip()
        params = []
        for part in (p.strip() for p in inner.split(",")) if inner else ():
            star = "**" if part.startswith("**") else "*" if part.startswith("*") else ""
            name = part[len(star):]
            params.append(ParamSpec(name.rstrip("="), star, name.endswith("=")))
        return cls(tuple(params))

    @classmethod
    def of_params(cls, params) -> Signature:
        """From observation.Param records (kind spelled as in inspect)."""
        return cls(tuple(ParamSpec(p.name, _STAR.get(p.kind, ""), p.has_default) for p in params))

    @classmethod
    def of_callable(cls, obj, drop_first: bool) -> Signature:
        """What inspect sees of an imported function (drop_first: an unbound method's self/cls)."""
        params = list(inspect.signature(obj).parameters.values())
        if drop_first and params:
            params = params[1:]
        return cls(tuple(ParamSpec(p.name, _STAR.get(p.kind.name, ""), p.default is not inspect.Parameter.empty)
                         for p in params))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def head(self, n: int) -> Signature:
        """The first n parameters (what a wrapper that passes the rest through depends on)."""
        return Signature(self.params[:n])

    def positional(self) -> tuple[str, ...]:
        """Names of the plain (non-star) parameters, in order."""
        return tuple(p.name for p in self.params if not p.star)

    def __str__(self) -> str:
        return "(" + ", ".join(p.render() for p in self.params) + ")"


# --------------------------------------------------------------------------- returns

@dataclass(frozen=True)
class ReturnNames:
    """What a function returns: one value, a tuple with one name per element (a position whose
    name differs between return statements reads 'a|b'), or return statements of different arity."""

    elements: tuple[str, ...] | None  # None: a single value
    mixed: tuple[str, ...] = ()  # the rendered return statements, when their arities differ

    VALUE = "value"

    @classmethod
    def parse(cls, text: str) -> ReturnNames:
        text = text.strip()
        if text in (cls.VALUE, ""):
            return cls(None)
        if text.startswith("mixed/"):
            return cls(None, tuple(part.strip() for part in text[len("mixed/"):].split(" | ")))
        if text.startswith("(") and text.endswith(")"):
            inner = text[1:-1].strip()
            return cls(tuple(n.strip() for n in inner.split(",")) if inner else ())
        raise ValueError(f"not a return shape: {text!r}")

    @property
    def is_tuple(self) -> bool:
        return self.elements is not None

    @property
    def is_mixed(self) -> bool:
        return bool(self.mixed)

    def positions(self) -> dict[str, int]:
        """Element name -> tuple position."""
        return {name: i for i, name in enumerate(self.elements or ())}

    @property
    def arity(self) -> str:
        """'value', 'tuple/N' or 'mixed/...': the shape a caller unpacks."""
        if self.is_mixed:
            return str(self)
        return f"tuple/{len(self.elements)}" if self.is_tuple else self.VALUE

    def __str__(self) -> str:
        if self.is_mixed:
            return "mixed/" + " | ".join(self.mixed)
        if not self.is_tuple:
            return self.VALUE
        return "(" + ", ".join(self.elements) + ")"


# --------------------------------------------------------------------------- name lists

@dataclass(frozen=True)
class NameList:
    names: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> NameList:
        return cls(tuple(n.strip() for n in text.split(",") if n.strip()))

    def missing_from(self, other: NameList) -> tuple[str, ...]:
        """Names of self that `other` lacks."""
        return tuple(n for n in self.names if n not in other.names)

    def __str__(self) -> str:
        return ", ".join(self.names)


# --------------------------------------------------------------------------- request ids

@dataclass(frozen=True)
class RequestIds:
    """How the engine treats the caller's request id: passed through, or reassigned (and by what)."""

    behaviour: str  # 'passthrough' | 'reassigned'
    by: str | None = None  # 'InputProcessor.assign_request_id', 'inline', None when only the behaviour is known

    @classmethod
    def parse(cls, text: str) -> RequestIds:
        text = text.strip()
        if text == "passthrough":
            return cls("passthrough")
        if text == "reassigned":
            return cls("reassigned")
        if text.startswith("reassigned "):
            rest = text[len("reassigned "):]
            return cls("reassigned", rest[len("by "):] if rest.startswith("by ") else rest)
        raise ValueError(f"not a request-id behaviour: {text!r}")

    def agrees(self, other: RequestIds) -> bool:
        """Same behaviour; where one side does not know what reassigns, the behaviour alone counts."""
        if self.behaviour != other.behaviour:
            return False
        return self.by is None or other.by is None or self.by == other.by

    def __str__(self) -> str:
        if self.behaviour == "passthrough" or self.by is None:
            return self.behaviour
        return f"reassigned {self.by}" if self.by == "inline" else f"reassigned by {self.by}"


# --------------------------------------------------------------------------- the aspect registry

ASPECT_TYPES = {
    "signature": Signature.parse,
    "leading": Signature.parse,
    "return_names": ReturnNames.parse,
    "fields": NameList.parse,
    "members": NameList.parse,
    "bases": NameList.parse,
    "loaded_in": NameList.parse,
    "request_ids": RequestIds.parse,
}


def parse_aspect(aspect: str, value):
    """A contract's (or a JSON round trip's) text as the aspect's value type; other aspects stay strings."""
    if value is None or not isinstance(value, str):
        return value
    parse = ASPECT_TYPES.get(aspect)
    return parse(value) if parse else value


def render_aspects(aspects: dict) -> dict:
    """Aspect values as the strings the reports print."""
    return {k: (v if v is None else str(v)) for k, v in aspects.items()}
