"""Static reader: finds surfaces in vLLM source, never importing it.

Where a surface is comes from Python's own parser: each module is parsed with `ast` (CPython's C
parser, ~0.1 s for every file a scan reads), so a `def` inside a docstring, a comment or a string
is never taken for code, lines are counted as Python counts them, and names are compared as Python
compares them (NFKC). What a surface says (parameters, defaults, returns, calls) comes from libcst
on just that definition's lines, since libcst on a whole 300 KB module costs about a second.

Every parse is bounded, so any input ends in BadInput (one line, exit 2) within seconds rather than
in a RecursionError, a segfault or gigabytes: Python's parser enforces its own limits (nesting,
200 open brackets) and its failures are caught; a definition handed to libcst is first checked
with `ast` for size, node count and nesting depth (MAX_SURFACE_BYTES, MAX_SURFACE_NODES,
MAX_NESTING), far above anything in vLLM (its deepest module nests 28 levels).
"""

from __future__ import annotations

import ast
import gc
import re
import unicodedata
import warnings
from dataclasses import dataclass, field

import libcst as cst

from driftcheck.contracts.observation import (
    KEYWORD_ONLY,
    POSITIONAL_ONLY,
    POSITIONAL_OR_KEYWORD,
    VAR_KEYWORD,
    VAR_POSITIONAL,
    Assignment,
    ClassObservation,
    FunctionObservation,
    Param,
    ReturnShape,
)
from driftcheck.contracts.values import descriptor_from_decorators
from driftcheck.errors import BadInput
from driftcheck.readers.source_tree import SourceTree

#: A definition read with libcst may be at most this large ...
MAX_SURFACE_BYTES = 256 << 10
#: ... have at most this many syntax nodes (libcst takes ~30 µs a node) ...
MAX_SURFACE_NODES = 40_000
#: ... and nest at most this deep (libcst's parser and visitors recurse per level).
MAX_NESTING = 100

_MODULE = cst.parse_module("")  # only for code_for_node


def code_text(node: cst.CSTNode) -> str:
    return _MODULE.code_for_node(node)


def code(node: cst.CSTNode | None) -> str | None:
    if node is None:
        return None
    return " ".join(_MODULE.code_for_node(node).split())


def nfkc(name: str) -> str:
    """An identifier as Python sees it (`ｓample` is `sample`)."""
    return name if name.isascii() else unicodedata.normalize("NFKC", name)


# --------------------------------------------------------------------------- bounded parsing

def parse_python(text: str, relpath: str) -> ast.Module:
    """The one entry that parses a whole module: Python's own parser, every failure BadInput."""
    collecting = gc.isenabled()
    gc.disable()  # the parser allocates ~10^5 nodes that hold no cycles: collecting them costs 20-40%
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. invalid escape sequences: not ours to report
            return ast.parse(text, filename=relpath)
    except SyntaxError as exc:
        raise BadInput(f"cannot parse {relpath}: line {exc.lineno}: {exc.msg}") from None
    except (RecursionError, MemoryError):
        raise BadInput(f"cannot parse {relpath}: nested too deeply or too large for Python's parser") from None
    except ValueError as exc:  # e.g. a NUL byte
        raise BadInput(f"cannot parse {relpath}: {exc}") from None
    finally:
        if collecting:
            gc.enable()


def check_bounds(node: ast.AST, what: str) -> None:
    """BadInput if `node` is nested deeper than MAX_NESTING or has more than MAX_SURFACE_NODES
    nodes (an explicit stack: never recursion, stops at the first excess)."""
    stack = [(node, 0)]
    count = 0
    while stack:
        n, depth = stack.pop()
        count += 1
        if depth > MAX_NESTING:
            raise BadInput(f"{what} is nested more than {MAX_NESTING} levels deep: not read")
        if count > MAX_SURFACE_NODES:
            raise BadInput(f"{what} has more than {MAX_SURFACE_NODES} syntax nodes: too large to read")
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(n))


def parse_cst(text: str, what: str) -> cst.Module:
    """libcst on text already bounded by check_bounds; every failure BadInput."""
    try:
        return cst.parse_module(text)
    except cst.ParserSyntaxError as exc:
        raise BadInput(f"cannot parse {what} with libcst: line {exc.raw_line}: {exc.message}") from None
    except (RecursionError, MemoryError):
        raise BadInput(f"{what} is nested too deeply or too large to read") from None


# --------------------------------------------------------------------------- module index

_NEWLINE = re.compile(r"\r\n|\r|\n")
FUNCTION_NODES = (ast.FunctionDef, ast.AsyncFunctionDef)


def ast_dotted(node: ast.AST) -> str | None:
    """What libcst's `_dotted` says of the same expression (`a.b`, `f()`, `x[]`, `?.attr`, None),
    computed without recursion."""
    chain = []
    while isinstance(node, (ast.Attribute, ast.Call, ast.Subscript)):
        chain.append(node)
        node = node.func if isinstance(node, ast.Call) else node.value
    head = node.id if isinstance(node, ast.Name) else None
    for n in reversed(chain):
        if isinstance(n, ast.Attribute):
            head = f"{head}.{n.attr}" if head else f"?.{n.attr}"
        elif isinstance(n, ast.Call):
            head = f"{head}()" if head else None
        else:
            head = f"{head}[]" if head else None
    return head


@dataclass(frozen=True)
class Block:
    name: str
    kind: str  # 'def' | 'class'
    start: int  # first line (0-based) including decorators
    header: int  # the def/class line (0-based)
    end: int  # exclusive
    indent: int  # nesting: 0 at module level, 1 in a class body
    node: ast.AST = field(repr=False, compare=False)


@dataclass
class ModuleIndex:
    relpath: str
    text: str
    _tree: ast.Module | None = field(default=None, repr=False)
    _starts: list[int] | None = field(default=None, repr=False)
    _top: dict | None = field(default=None, repr=False)
    _imports: dict | None = field(default=None, repr=False)

    @classmethod
    def of(cls, relpath: str, text: str) -> "ModuleIndex":
        return cls(relpath, text)

    @property
    def tree(self) -> ast.Module:
        """The module as Python parses it (on first use)."""
        if self._tree is None:
            self._tree = parse_python(self.text, self.relpath)
        return self._tree

    def may_name(self, name: str) -> bool:
        """False only when the module cannot contain the identifier `name`: ASCII source spells
        every identifier verbatim (non-ASCII source may spell it in an NFKC-equivalent form)."""
        return name in self.text or not self.text.isascii()

    @property
    def line_starts(self) -> list[int]:
        """Offsets where each physical line starts, as Python's tokenizer splits lines (\\r\\n, \\r, \\n only)."""
        if self._starts is None:
            self._starts = [0] + [m.end() for m in _NEWLINE.finditer(self.text)]
        return self._starts

    def line(self, k: int) -> str:
        starts = self.line_starts
        return self.text[starts[k]: starts[k + 1] if k + 1 < len(starts) else len(self.text)]

    def _block(self, node: ast.AST, indent: int) -> Block:
        header = node.lineno - 1
        start = min([d.lineno - 1 for d in node.decorator_list] + [header])
        # a decorator's `@` may sit on an earlier line that a backslash continues
        while start > 0 and node.decorator_list and not self.line(start).lstrip(" \t\f").startswith("@") \
                and self.line(start - 1).rstrip("\r\n").endswith("\\"):
            start -= 1
        kind = "class" if isinstance(node, ast.ClassDef) else "def"
        return Block(node.name, kind, start, header, node.end_lineno, indent, node)

    def top(self, name: str) -> Block | None:
        """The module-level def/class `name` (the last definition: it is the one Python binds)."""
        if self._top is None:
            self._top = {n.name: n for n in self.tree.body if isinstance(n, (*FUNCTION_NODES, ast.ClassDef))}
        node = self._top.get(name)
        return None if node is None else self._block(node, 0)

    def top_classes(self) -> list[Block]:
        return [self._block(n, 0) for n in self.tree.body if isinstance(n, ast.ClassDef)]

    def members(self, cls_block: Block) -> list[Block]:
        """The defs and classes directly in a class body, in order."""
        if not isinstance(cls_block.node, ast.ClassDef):
            return []
        return [self._block(n, cls_block.indent + 1) for n in cls_block.node.body
                if isinstance(n, (*FUNCTION_NODES, ast.ClassDef))]

    def member(self, cls_block: Block, name: str) -> Block | None:
        """The method `name` of a class (the last def of that name in its body)."""
        found = [b for b in self.members(cls_block) if b.name == name and b.kind == "def"]
        return found[-1] if found else None

    def snippet(self, block: Block) -> str:
        starts = self.line_starts
        return self.text[starts[block.start]: starts[block.end] if block.end < len(starts) else len(self.text)]


# --------------------------------------------------------------------------- imports (for re-exports and bases)

def _statements(body):
    """Every statement under `body`, depth first in source order (expressions are not entered)."""
    for stmt in body:
        yield stmt
        for name in ("body", "orelse", "finalbody"):
            inner = getattr(stmt, name, None)
            if isinstance(inner, list):
                yield from _statements(inner)
        for handler in getattr(stmt, "handlers", ()):
            yield from _statements(handler.body)
        for case in getattr(stmt, "cases", ()):
            yield from _statements(case.body)


def imported_names(index: ModuleIndex) -> dict[str, str]:
    """name -> absolute module it is imported from (`from X import name [as alias]`), anywhere in
    the module (a function's lazy import too)."""
    if index._imports is not None:
        return index._imports
    package = index.relpath[: -len(".py")].replace("/", ".")
    if package.endswith(".__init__"):
        package = package[: -len(".__init__")]
    else:
        package = package.rpartition(".")[0]
    out = {}
    for stmt in _statements(index.tree.body):
        if not isinstance(stmt, ast.ImportFrom):
            continue
        mod = stmt.module or ""
        if stmt.level:
            base = package.split(".")
            base = base[: len(base) - (stmt.level - 1)] if stmt.level > 1 else base
            mod = ".".join(base + ([mod] if mod else []))
        for alias in stmt.names:
            out[alias.asname or alias.name] = mod
    index._imports = out
    return out


# --------------------------------------------------------------------------- libcst extraction

_WATCHED_ATTRS = ("request_id", "external_req_id", "req_id")
_CONVERSIONS = ("int", "float", "bool", "tuple", "list")


def _param(p: cst.Param, kind: str) -> Param:
    return Param(
        name=nfkc(p.name.value),
        kind=kind,
        has_default=p.default is not None,
        default=code(p.default),
        annotation=code(p.annotation.annotation) if p.annotation else None,
    )


def _params(ps: cst.Parameters, drop_first: bool) -> tuple[Param, ...]:
    out: list[Param] = []
    out += [_param(p, POSITIONAL_ONLY) for p in ps.posonly_params]
    out += [_param(p, POSITIONAL_OR_KEYWORD) for p in ps.params]
    if isinstance(ps.star_arg, cst.Param):
        out.append(_param(ps.star_arg, VAR_POSITIONAL))
    out += [_param(p, KEYWORD_ONLY) for p in ps.kwonly_params]
    if ps.star_kwarg is not None:
        out.append(_param(ps.star_kwarg, VAR_KEYWORD))
    if drop_first and out and out[0].kind in (POSITIONAL_ONLY, POSITIONAL_OR_KEYWORD):
        out = out[1:]
    return tuple(out)


def mangled(params: tuple[Param, ...], cls_name: str) -> tuple[Param, ...]:
    """Parameter names as Python compiles them in a class body: `__x` becomes `_Cls__x`
    (what inspect and keyword calls see)."""
    owner = cls_name.lstrip("_")
    if not owner:
        return params
    return tuple(
        Param(**{**p.__dict__, "name": f"_{owner}{p.name}"})
        if p.name.startswith("__") and not p.name.endswith("__") else p
        for p in params
    )


def _dotted(node: cst.BaseExpression) -> str | None:
    if isinstance(node, cst.Name):
        return nfkc(node.value)
    if isinstance(node, cst.Attribute):
        head = _dotted(node.value)
        return f"{head}.{nfkc(node.attr.value)}" if head else f"?.{nfkc(node.attr.value)}"
    if isinstance(node, cst.Call):
        head = _dotted(node.func)
        return f"{head}()" if head else None
    if isinstance(node, cst.Subscript):
        head = _dotted(node.value)
        return f"{head}[]" if head else None
    return None


def element_name(node: cst.BaseExpression) -> str:
    """A stable name for one returned element: the variable or attribute it reads."""
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        return node.attr.value
    if isinstance(node, cst.Call):
        dotted = _dotted(node.func)
        if dotted in _CONVERSIONS and len(node.args) == 1:
            return element_name(node.args[0].value)  # int(x) still returns x
        if not dotted:
            return "?"
        return (dotted[len("self."):] if dotted.startswith("self.") else dotted.rsplit(".", 1)[-1]
                if "." in dotted and not dotted.split(".")[0].isidentifier() else dotted) + "()"
    if isinstance(node, cst.Subscript):
        return element_name(node.value) + "[]"
    if isinstance(node, cst.StarredElement):
        return "*" + element_name(node.value)
    if isinstance(node, (cst.Integer, cst.Float, cst.SimpleString, cst.ConcatenatedString)):
        return "<const>"
    return "?"


def return_shape(value: cst.BaseExpression | None) -> ReturnShape:
    if value is None:
        return ReturnShape(arity=0, elements=())
    if isinstance(value, cst.Tuple):
        names = tuple(element_name(e.value if isinstance(e, cst.Element) else e) for e in value.elements)
        return ReturnShape(arity=len(names), elements=names)
    if isinstance(value, cst.Name) and value.value == "None":
        return ReturnShape(arity=0, elements=())
    return ReturnShape(arity=None, elements=(element_name(value),))


def _string_annotation_arity(text: str) -> int | None:
    """annotation_arity of a forward reference, read with Python's parser (bounded: a string
    of 100k parentheses is a SyntaxError there, never a deep recursion)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            node = ast.parse(text.strip(), mode="eval").body
    except (SyntaxError, RecursionError, MemoryError, ValueError):
        return None
    if isinstance(node, ast.Subscript) and (ast_dotted(node.value) or "").rsplit(".", 1)[-1] in ("tuple", "Tuple"):
        elems = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        if len(elems) == 2 and isinstance(elems[1], ast.Constant) and elems[1].value is Ellipsis:
            return None
        return len(elems)
    return None


def annotation_arity(annotation: cst.BaseExpression | None) -> int | None:
    """Element count of a `tuple[...]`/`Tuple[...]` annotation (string annotations too)."""
    if annotation is None:
        return None
    if isinstance(annotation, cst.SimpleString):
        try:
            return _string_annotation_arity(annotation.evaluated_value)
        except Exception:  # noqa: BLE001 - a string libcst cannot evaluate (e.g. bytes)
            return None
    if isinstance(annotation, cst.Subscript):
        head = _dotted(annotation.value) or ""
        if head.rsplit(".", 1)[-1] in ("tuple", "Tuple"):
            elems = annotation.slice
            if len(elems) == 2 and code(elems[1].slice) == "...":
                return None
            return len(elems)
    return None


class _BodyFacts(cst.CSTVisitor):
    """Return statements, calls and watched assignments of one function body (not nested defs)."""

    def __init__(self, qualname: str) -> None:
        self.qualname = qualname
        self.returns: list[ReturnShape] = []
        self.calls: list[str] = []
        self.assignments: list[Assignment] = []
        self.mentions: list[str] = []
        self.assigned_calls: list[tuple[str, str]] = []
        self._depth = 0
        self._loops = 0

    def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
        self._depth += 1
        return self._depth == 1

    def leave_FunctionDef(self, node: cst.FunctionDef) -> None:
        self._depth -= 1

    def visit_Lambda(self, node: cst.Lambda) -> bool:
        return False

    def visit_ClassDef(self, node: cst.ClassDef) -> bool:
        return False

    def visit_For(self, node: cst.For) -> None:
        self._loops += 1

    def leave_For(self, node: cst.For) -> None:
        self._loops -= 1

    def visit_While(self, node: cst.While) -> None:
        self._loops += 1

    def leave_While(self, node: cst.While) -> None:
        self._loops -= 1

    def visit_Return(self, node: cst.Return) -> None:
        self.returns.append(return_shape(node.value))

    def visit_Call(self, node: cst.Call) -> None:
        dotted = _dotted(node.func)
        if dotted:
            self.calls.append(dotted)
            self.mentions.append(dotted + "(")

    def visit_Attribute(self, node: cst.Attribute) -> None:
        self.mentions.append(nfkc(node.attr.value))

    def _assigned_call(self, value: cst.BaseExpression | None) -> None:
        if isinstance(value, cst.Call):
            dotted = _dotted(value.func)
            if dotted:
                self.assigned_calls.append((dotted, code(value)))

    def _watch(self, target: cst.BaseExpression, value: cst.BaseExpression | None) -> None:
        if value is None:
            return
        watched = (isinstance(target, cst.Attribute) and target.attr.value in _WATCHED_ATTRS) or (
            isinstance(target, cst.Name) and (target.value == "request_id" or target.value.endswith("_req_id"))
        )
        if watched:
            if isinstance(value, cst.Name):
                kind = "name"
            elif isinstance(value, cst.FormattedString):
                kind = "fstring"
            elif isinstance(value, cst.Call):
                kind = "call"
            else:
                kind = "other"
            self.assignments.append(
                Assignment(self.qualname, code(target), code(value), self._loops > 0, kind)
            )

    def visit_Assign(self, node: cst.Assign) -> None:
        for t in node.targets:
            self._watch(t.target, node.value)
        self._assigned_call(node.value)

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        self._watch(node.target, node.value)
        self._assigned_call(node.value)


def function_facts(fn: cst.FunctionDef, qualname: str, where: str, in_class: bool) -> FunctionObservation:
    descriptor = descriptor_from_decorators((_dotted(d.decorator) or "" for d in fn.decorators), in_class)
    body = _BodyFacts(qualname)
    fn.visit(body)
    ann = fn.returns.annotation if fn.returns else None
    return FunctionObservation(
        qualname=qualname,
        where=where,
        descriptor=descriptor,
        params=_params(fn.params, drop_first=descriptor in ("instance", "classmethod", "property")),
        return_annotation=code(ann),
        annotation_arity=annotation_arity(ann),
        returns=tuple(body.returns),
        calls=tuple(body.calls),
        assignments=tuple(body.assignments),
        source=code_text(fn),
        mentions=tuple(body.mentions),
        assigned_calls=tuple(body.assigned_calls),
    )


# --------------------------------------------------------------------------- the reader

class SurfaceNotFound(Exception):
    """The named class/function is not in the tree (a drift, not bad input)."""


class StaticReader:
    """Reads functions and classes out of one source tree, by dotted module + qualname."""

    def __init__(self, tree: SourceTree) -> None:
        self.tree = tree
        self._indexes: dict[str, ModuleIndex | None] = {}

    # -- modules
    def index(self, module: str) -> ModuleIndex | None:
        if module not in self._indexes:
            found = self.tree.module_file(module)
            self._indexes[module] = ModuleIndex.of(*found) if found else None
        return self._indexes[module]

    def resolve(self, module: str, name: str, hops: int = 3) -> tuple[str, ModuleIndex, Block]:
        """Where top-level `name` of `module` is defined, following `from X import name`."""
        index = self.index(module)
        if index is None:
            raise SurfaceNotFound(f"module {module} not found")
        if not index.may_name(name):
            raise SurfaceNotFound(f"{module}:{name} not found")  # neither defined nor imported there
        block = index.top(name)
        if block is not None:
            return module, index, block
        source = imported_names(index).get(name)
        if source and hops > 0 and source != module:
            return self.resolve(source, name, hops - 1)
        raise SurfaceNotFound(f"{module}:{name} not found")

    # -- one definition, with libcst, bounded
    def _node(self, index: ModuleIndex, block: Block) -> cst.FunctionDef:
        what = f"{index.relpath}:{block.header + 1} ({block.name})"
        snippet = index.snippet(block)
        if len(snippet) > MAX_SURFACE_BYTES:
            raise BadInput(f"{what} is {len(snippet)} characters long, over the {MAX_SURFACE_BYTES} "
                           "a definition may have: not read")
        check_bounds(block.node, what)
        if block.indent == 0:
            node = parse_cst(snippet, what).body[0]
        else:
            newline = m.group(0) if (m := _NEWLINE.search(snippet)) else "\n"
            node = parse_cst("class _Slice:" + newline + snippet, what).body[0].body.body[0]
        if not isinstance(node, (cst.FunctionDef, cst.ClassDef)) or nfkc(node.name.value) != block.name:
            raise BadInput(f"cannot read {what}: libcst and Python's parser disagree on its lines")
        return node

    def _facts(self, index: ModuleIndex, block: Block, qualname: str, in_class: bool) -> FunctionObservation:
        node = self._node(index, block)
        try:
            return function_facts(node, qualname, f"{index.relpath}:{block.header + 1}", in_class=in_class)
        except (RecursionError, MemoryError):
            raise BadInput(f"{index.relpath}:{block.header + 1} ({block.name}) is nested too deeply "
                           "or too large to read") from None

    # -- public
    def function(self, module: str, qualname: str, _hops: int = 3) -> FunctionObservation:
        """A module function `f` or a method `Cls.m` (inherited methods are found in bases)."""
        parts = qualname.split(".")
        if len(parts) == 1:
            mod, index, block = self.resolve(module, parts[0])
            if block.kind != "def":
                raise SurfaceNotFound(f"{module}:{qualname} is not a function")
            return self._facts(index, block, qualname, in_class=False)
        cls_name, member = parts[0], parts[1]
        mod, index, cls_block = self.resolve(module, cls_name)
        if cls_block.kind != "class":
            raise SurfaceNotFound(f"{module}:{cls_name} is not a class")
        block = index.member(cls_block, member)
        if block is not None:
            obs = self._facts(index, block, qualname, in_class=True)
            return FunctionObservation(**{**obs.__dict__, "params": mangled(obs.params, cls_name)})
        # Not defined here: an inherited method lives in a base class.
        if _hops > 0:
            for base_mod, base_name in self._bases(mod, index, cls_block):
                try:
                    obs = self.function(base_mod, f"{base_name}.{member}", _hops - 1)
                except SurfaceNotFound:
                    continue
                return FunctionObservation(**{**obs.__dict__, "qualname": qualname,
                                              "defined_in": obs.defined_in or base_name})
        raise SurfaceNotFound(f"{module}:{qualname} not found")

    @staticmethod
    def _base_name(node: ast.expr) -> str:
        dotted = ast_dotted(node)
        if dotted is not None:
            return dotted.rsplit(".", 1)[-1]
        try:
            return ast.unparse(node).rsplit(".", 1)[-1]
        except (RecursionError, MemoryError, ValueError):
            return "?"

    def _bases(self, module: str, index: ModuleIndex, cls_block: Block) -> list[tuple[str, str]]:
        imports = imported_names(index)
        out = []
        for base in cls_block.node.bases:
            name = self._base_name(base)
            out.append((imports.get(name, module), name))
        return out

    def klass(self, module: str, name: str) -> ClassObservation:
        mod, index, block = self.resolve(module, name)
        if block.kind != "class":
            raise SurfaceNotFound(f"{module}:{name} is not a class")
        node: ast.ClassDef = block.node
        members = []
        fields: list[str] = []
        init = None
        for m in node.body:
            if not isinstance(m, FUNCTION_NODES):
                continue
            kind = descriptor_from_decorators((ast_dotted(d) or "" for d in m.decorator_list), in_class=True)
            members.append((m.name, kind))
            if kind == "property" and m.name not in fields:
                fields.append(m.name)
            if m.name == "__init__":
                init = m
        for stmt in node.body:
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.target.id not in fields:
                fields.append(stmt.target.id)
        if init is not None:
            for attr in _self_attributes(init):
                if attr not in fields:
                    fields.append(attr)
        return ClassObservation(
            qualname=name,
            where=f"{index.relpath}:{block.header + 1}",
            bases=tuple(b for _, b in self._bases(mod, index, block)),
            members=tuple(members),
            fields=tuple(fields),
        )

    def string_constants(self, module: str) -> list[str]:
        """String literals assigned at module level (e.g. entry-point group names)."""
        index = self.index(module)
        if index is None:
            raise SurfaceNotFound(f"module {module} not found")
        out = []
        for stmt in index.tree.body:
            value = stmt.value if isinstance(stmt, (ast.Assign, ast.AnnAssign)) else None
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                out.append(value.value)
        return out

    def strings(self, module: str) -> set[str]:
        """Every string literal in the module."""
        index = self.index(module)
        if index is None:
            return set()
        return {n.value for n in ast.walk(index.tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}

    def constant_strings(self, module: str, name: str) -> tuple[str, ...] | None:
        """The string literals in the value of module-level constant `name` (e.g. a frozenset of
        architecture names), read from the module's syntax tree (nothing is evaluated); None when
        there is no such assignment."""
        index = self.index(module)
        if index is None:
            raise SurfaceNotFound(f"module {module} not found")
        for node in index.tree.body:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
            if any(isinstance(t, ast.Name) and t.id == name for t in targets) and node.value is not None:
                return tuple(n.value for n in ast.walk(node.value) if isinstance(n, ast.Constant) and isinstance(n.value, str))
        return None

    def modules_calling(self, function: str, modules: list[str]) -> list[str]:
        """Which of `modules` call `function` (by name or as an attribute), read from the syntax tree."""
        out = []
        for module in modules:
            index = self.index(module)
            if index is None:
                continue
            if not index.may_name(function):
                continue
            if any(isinstance(n, ast.Call) and (ast_dotted(n.func) or "").rsplit(".", 1)[-1] == function
                   for n in ast.walk(index.tree)):
                out.append(module)
        return out


def _self_attributes(fn: ast.AST) -> list[str]:
    """`self.X` assigned anywhere in a function (`self.X = ...`, `self.X: T = ...`), in source order."""
    found = []
    for n in ast.walk(fn):
        targets = n.targets if isinstance(n, ast.Assign) else [n.target] if isinstance(n, ast.AnnAssign) else []
        for t in targets:
            if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self":
                found.append((t.lineno, t.col_offset, t.attr))
    return [attr for _, _, attr in sorted(found)]


def find_methods(reader: "StaticReader", module: str, method: str) -> list[FunctionObservation]:
    """Every `Class.method` defined at top level of `module` (used to follow calls like
    `self.input_processor.assign_request_id(...)` without knowing the attribute's type)."""
    index = reader.index(module)
    if index is None or not index.may_name(method):
        return []
    out = []
    for cls_block in index.top_classes():
        block = index.member(cls_block, method)
        if block is not None:
            out.append(reader._facts(index, block, f"{cls_block.name}.{method}", in_class=True))
    return out
