"""Static reader: finds surfaces in vLLM source with libcst, never importing it.

Speed matters (a scan must finish in well under 2 s, and gpu_model_runner.py
alone is ~300 KB, about 1 s for libcst to parse whole), so a lexical index
first cuts out just the class or function a surface names, and libcst parses
that slice. A slice that does not parse (an odd layout, a triple-quoted string
at column 0) falls back to parsing the whole module: slower, never wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

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

_MODULE = cst.parse_module("")  # only for code_for_node


def code_text(node: cst.CSTNode) -> str:
    return _MODULE.code_for_node(node)


def code(node: cst.CSTNode | None) -> str | None:
    if node is None:
        return None
    return " ".join(_MODULE.code_for_node(node).split())


# --------------------------------------------------------------------------- lexical index

_DEF_RE = re.compile(r"^(?P<indent>[ \t]*)(?:async[ \t]+)?(?P<kw>def|class)[ \t]+(?P<name>\w+)")
_FIELD_RE = re.compile(r"^    (?P<name>[A-Za-z_]\w*)\s*:")


@dataclass(frozen=True)
class Block:
    name: str
    kind: str  # 'def' | 'class'
    start: int  # first line (0-based) including decorators
    header: int  # the def/class line
    end: int  # exclusive
    indent: int


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def _blocks(lines: list[str], lo: int, hi: int, indent: int) -> list[Block]:
    """def/class blocks whose header sits at exactly `indent` within lines[lo:hi]."""
    found = []
    i = lo
    while i < hi:
        m = _DEF_RE.match(lines[i])
        if not m or len(m.group("indent")) != indent:
            i += 1
            continue
        start = i
        while start - 1 >= lo and lines[start - 1].lstrip().startswith("@") and _indent(lines[start - 1]) == indent:
            start -= 1
        j = i + 1
        while j < hi:
            stripped = lines[j].strip()
            if stripped and not stripped.startswith("#") and _indent(lines[j]) <= indent and stripped[0] not in ")]}":
                break
            j += 1
        found.append(Block(m.group("name"), m.group("kw"), start, i, j, indent))
        i = j
    return found


@dataclass
class ModuleIndex:
    relpath: str
    text: str
    lines: list[str]

    @classmethod
    def of(cls, relpath: str, text: str) -> "ModuleIndex":
        return cls(relpath, text, text.splitlines(keepends=True))

    def top(self, name: str) -> Block | None:
        for b in _blocks(self.lines, 0, len(self.lines), 0):
            if b.name == name:
                return b
        return None

    def members(self, cls_block: Block) -> list[Block]:
        body_indent = None
        for k in range(cls_block.header + 1, cls_block.end):
            s = self.lines[k].strip()
            if s and not s.startswith("#") and s[0] not in ")]}":
                body_indent = _indent(self.lines[k])
                break
        if body_indent is None:
            return []
        return _blocks(self.lines, cls_block.header + 1, cls_block.end, body_indent)

    def snippet(self, block: Block) -> str:
        return "".join(self.lines[block.start : block.end])


# --------------------------------------------------------------------------- imports (for re-exports and bases)

_FROM_IMPORT_RE = re.compile(r"^(?:[ \t]*)from[ \t]+(?P<mod>\.*[\w.]*)[ \t]+import[ \t]+(?P<names>\([^)]*\)|[^\n#]+)", re.M)


def imported_names(index: ModuleIndex) -> dict[str, str]:
    """name -> absolute module it is imported from (`from X import name [as alias]`)."""
    package = index.relpath[: -len(".py")].replace("/", ".")
    if package.endswith(".__init__"):
        package = package[: -len(".__init__")]
    else:
        package = package.rpartition(".")[0]
    out = {}
    for m in _FROM_IMPORT_RE.finditer(index.text):
        mod = m.group("mod")
        if mod.startswith("."):
            dots = len(mod) - len(mod.lstrip("."))
            base = package.split(".")
            base = base[: len(base) - (dots - 1)] if dots > 1 else base
            mod = ".".join(base + ([mod.lstrip(".")] if mod.lstrip(".") else []))
        for part in m.group("names").strip("()").replace("\n", " ").split(","):
            part = part.split("#")[0].strip()
            if not part:
                continue
            name, _, alias = part.partition(" as ")
            out[(alias or name).strip()] = mod
    return out


# --------------------------------------------------------------------------- libcst extraction

_WATCHED_ATTRS = ("request_id", "external_req_id", "req_id")
_CONVERSIONS = ("int", "float", "bool", "tuple", "list")


def _param(p: cst.Param, kind: str) -> Param:
    return Param(
        name=p.name.value,
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
        return node.value
    if isinstance(node, cst.Attribute):
        head = _dotted(node.value)
        return f"{head}.{node.attr.value}" if head else f"?.{node.attr.value}"
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


def annotation_arity(annotation: cst.BaseExpression | None) -> int | None:
    """Element count of a `tuple[...]`/`Tuple[...]` annotation (string annotations too)."""
    if annotation is None:
        return None
    if isinstance(annotation, cst.SimpleString):
        try:
            return annotation_arity(cst.parse_expression(annotation.evaluated_value))
        except Exception:  # noqa: BLE001 - a forward-ref string that is not an expression
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

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        self._watch(node.target, node.value)


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
    )


class _InitFields(cst.CSTVisitor):
    def __init__(self) -> None:
        self.fields: list[str] = []

    def _add(self, target: cst.BaseExpression) -> None:
        if isinstance(target, cst.Attribute) and isinstance(target.value, cst.Name) and target.value.value == "self":
            if target.attr.value not in self.fields:
                self.fields.append(target.attr.value)

    def visit_Assign(self, node: cst.Assign) -> None:
        for t in node.targets:
            self._add(t.target)

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        self._add(node.target)


# --------------------------------------------------------------------------- the reader

class SurfaceNotFound(Exception):
    """The named class/function is not in the tree (a drift, not bad input)."""


class StaticReader:
    """Reads functions and classes out of one source tree, by dotted module + qualname."""

    def __init__(self, tree: SourceTree) -> None:
        self.tree = tree
        self._indexes: dict[str, ModuleIndex | None] = {}
        self._full: dict[str, cst.Module] = {}

    # -- modules
    def index(self, module: str) -> ModuleIndex | None:
        if module not in self._indexes:
            found = self.tree.module_file(module)
            self._indexes[module] = ModuleIndex.of(*found) if found else None
        return self._indexes[module]

    def _parse(self, text: str, relpath: str) -> cst.Module:
        try:
            return cst.parse_module(text)
        except cst.ParserSyntaxError as exc:
            raise BadInput(f"cannot parse {relpath}: line {exc.raw_line}: {exc.message}") from None

    def _full_module(self, index: ModuleIndex) -> cst.Module:
        if index.relpath not in self._full:
            self._full[index.relpath] = self._parse(index.text, index.relpath)
        return self._full[index.relpath]

    def resolve(self, module: str, name: str, hops: int = 3) -> tuple[str, ModuleIndex, Block]:
        """Where top-level `name` of `module` is defined, following `from X import name`."""
        index = self.index(module)
        if index is None:
            raise SurfaceNotFound(f"module {module} not found")
        block = index.top(name)
        if block is not None:
            return module, index, block
        source = imported_names(index).get(name)
        if source and hops > 0 and source != module:
            return self.resolve(source, name, hops - 1)
        raise SurfaceNotFound(f"{module}:{name} not found")

    # -- parsing one block, with the whole-module fallback
    def _node(self, index: ModuleIndex, block: Block, path: tuple[str, ...]):
        snippet = index.snippet(block)
        try:
            if block.indent == 0:
                mod = cst.parse_module(snippet)
                node = mod.body[0]
            else:
                mod = cst.parse_module("class _Slice:\n" + snippet)
                node = mod.body[0].body.body[0]
            if getattr(node, "name", None) is not None and node.name.value == block.name:
                return node
        except cst.ParserSyntaxError:
            pass
        return self._walk(self._full_module(index), path)

    @staticmethod
    def _walk(mod: cst.Module, path: tuple[str, ...]):
        body = mod.body
        node = None
        for part in path:
            node = next(
                (n for n in body if isinstance(n, (cst.FunctionDef, cst.ClassDef)) and n.name.value == part),
                None,
            )
            if node is None:
                raise SurfaceNotFound(".".join(path))
            body = node.body.body if isinstance(node.body, cst.IndentedBlock) else []
        return node

    # -- public
    def function(self, module: str, qualname: str, _hops: int = 3) -> FunctionObservation:
        """A module function `f` or a method `Cls.m` (inherited methods are found in bases)."""
        parts = qualname.split(".")
        if len(parts) == 1:
            mod, index, block = self.resolve(module, parts[0])
            if block.kind != "def":
                raise SurfaceNotFound(f"{module}:{qualname} is not a function")
            node = self._node(index, block, (parts[0],))
            return function_facts(node, qualname, f"{index.relpath}:{block.header + 1}", in_class=False)
        cls_name, member = parts[0], parts[1]
        mod, index, cls_block = self.resolve(module, cls_name)
        for block in index.members(cls_block):
            if block.name == member and block.kind == "def":
                node = self._node(index, block, (cls_name, member))
                obs = function_facts(node, qualname, f"{index.relpath}:{block.header + 1}", in_class=True)
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

    def _bases(self, module: str, index: ModuleIndex, cls_block: Block) -> list[tuple[str, str]]:
        header = "".join(index.lines[cls_block.header : cls_block.header + 8])
        m = re.search(r"class\s+\w+\s*\((.*?)\)\s*:", header, re.S)
        if not m:
            return []
        imports = imported_names(index)
        out = []
        for base in m.group(1).split(","):
            base = base.strip().rsplit(".", 1)[-1]
            if not base or "=" in base:
                continue
            out.append((imports.get(base, module), base))
        return out

    def klass(self, module: str, name: str) -> ClassObservation:
        mod, index, block = self.resolve(module, name)
        if block.kind != "class":
            raise SurfaceNotFound(f"{module}:{name} is not a class")
        members = []
        fields: list[str] = []
        init_block = None
        for m in index.members(block):
            if m.kind != "def":
                continue
            decorators = re.findall(r"^\s*@([\w.]+)", "".join(index.lines[m.start : m.header]), re.M)
            kind = descriptor_from_decorators(decorators, in_class=True)
            members.append((m.name, kind))
            if kind == "property":
                fields.append(m.name)
            if m.name == "__init__":
                init_block = m
        for k in range(block.header + 1, block.end):
            fm = _FIELD_RE.match(index.lines[k])
            if fm and fm.group("name") not in fields:
                fields.append(fm.group("name"))
        if init_block is not None:
            node = self._node(index, init_block, (name, "__init__"))
            visitor = _InitFields()
            node.visit(visitor)
            fields += [f for f in visitor.fields if f not in fields]
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
        return re.findall(r"""^[A-Za-z_]\w*\s*(?::[^=]*)?=\s*['"]([^'"]+)['"]""", index.text, re.M)

    def constant_strings(self, module: str, name: str) -> tuple[str, ...] | None:
        """The string literals in the value of module-level constant `name` (e.g. a frozenset of
        architecture names), read with `ast` (nothing is evaluated); None when there is no such
        assignment."""
        import ast

        index = self.index(module)
        if index is None:
            raise SurfaceNotFound(f"module {module} not found")
        if not re.search(rf"^{re.escape(name)}\s*(?::[^=]*)?=", index.text, re.M):
            return None
        tree = ast.parse(index.text)
        for node in tree.body:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
            if any(isinstance(t, ast.Name) and t.id == name for t in targets) and node.value is not None:
                return tuple(n.value for n in ast.walk(node.value) if isinstance(n, ast.Constant) and isinstance(n.value, str))
        return None

    def modules_calling(self, function: str, modules: list[str]) -> list[str]:
        """Which of `modules` call `function` (a cheap lexical check, for plugin loading)."""
        out = []
        for module in modules:
            index = self.index(module)
            if index is not None and re.search(rf"\b{re.escape(function)}\s*\(", index.text):
                out.append(module)
        return out


def find_methods(reader: "StaticReader", module: str, method: str) -> list[FunctionObservation]:
    """Every `Class.method` defined at top level of `module` (used to follow calls like
    `self.input_processor.assign_request_id(...)` without knowing the attribute's type)."""
    index = reader.index(module)
    if index is None or not re.search(rf"def {re.escape(method)}\s*\(", index.text):
        return []
    out = []
    for block in _blocks(index.lines, 0, len(index.lines), 0):
        if block.kind != "class":
            continue
        for m in index.members(block):
            if m.name == method and m.kind == "def":
                node = reader._node(index, m, (block.name, method))
                out.append(function_facts(node, f"{block.name}.{method}", f"{index.relpath}:{m.header + 1}", True))
    return out
