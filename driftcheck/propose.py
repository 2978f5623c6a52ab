"""`driftcheck propose`: for each surface whose observed contract is unknown, a new shim
generated (with libcst) from the nearest known shim for that surface.

What a proposal derives from the scan, and what it leaves to a human:

  contract    the observed aspects become a new catalog contract (CONTRACTS in the
              generated module; the catalog picks it up through DRIFTCHECK_SHIM_PATH)
  signature   a wrapper that names parameters is realigned to the new signature:
              renamed parameters are renamed, parameters inserted before the ones it
              names are added to its list and its call; a removed parameter it uses
              is a TODO
  descriptor  instance -> staticmethod drops `self` from the wrapper and its call
              (a TODO if the wrapper uses `self` otherwise, or serves several methods)
  returns     shims that read return positions from the contract's names
              (RETURN_NAMES_USED) adapt by themselves when those names are all still
              returned; a name that is gone is a TODO
  otherwise   request-id behaviour, fields, members, modules: these change what a
              surface means, not its shape; always a TODO

A surface with a TODO is not claimed in the generated HANDLES, so the shim is never
selected for a contract it does not handle: binding still refuses, naming the surface.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import json
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import libcst as cst

from driftcheck.contracts.drift import DriftKind
from driftcheck.contracts.matching import MISSING, UNKNOWN, expected_aspects
from driftcheck.contracts.values import ReturnNames, Signature
from driftcheck.errors import BadInput
from driftcheck.files import write_files

TODO = "TODO(driftcheck propose)"
SHAPE_ASPECTS = ("signature", "descriptor", "return_arity", "return_names", "present")


@dataclass
class Proposal:
    name: str  # module name of the generated shim
    nearest: str  # the built-in shim it derives from
    hook_point: str
    contracts: dict  # surface id -> new contract id
    claimed: list  # surfaces the generated HANDLES claims (the rest carry a TODO)
    code: str
    test_code: str
    source_code: str  # the nearest shim's source, for the diff
    todos: list = field(default_factory=list)
    derived: list = field(default_factory=list)  # what the generator adapted, one line each

    def diff(self) -> str:
        return "".join(difflib.unified_diff(self.source_code.splitlines(True), self.code.splitlines(True),
                                            f"shims/{self.nearest}.py", f"{self.name}.py"))


def new_contract(result, version: str | None):
    """The observed aspects as a catalog contract; the id says which family it extends."""
    from driftcheck.contracts.catalog import C

    seen = {a: str(v) for a, v in result.observation.aspects.items()}
    aspects = {a: seen[a] for a in result.surface.aspects if a in seen}
    # aspects every surface of its kind has by default (present, descriptor): only where they differ
    defaults = expected_aspects(result.surface, C("", "", "0.0.0"))
    aspects.update({a: seen[a] for a, v in defaults.items() if a in seen and seen[a] != str(v)})
    digest = hashlib.sha1(json.dumps(aspects, sort_keys=True).encode()).hexdigest()[:6]
    family = (result.nearest or result.surface.baseline).id.split("/")[0]
    summary = "; ".join(d.render() for d in result.drifts) or "generated"
    return C(f"{family}/gen-{digest}", summary, f"{version}-{version}" if version else "0.0.0-", **aspects)


def nearest_shim(result):
    from driftcheck.shims.plan import builtin_shim_modules

    candidates = [m for m in builtin_shim_modules() if result.surface.id in m.HANDLES]
    near = [m for m in candidates if result.nearest and result.nearest.id in m.HANDLES[result.surface.id]]
    return (near or candidates or [None])[0]


def propose(scan) -> tuple[list[Proposal], list[str]]:
    """Proposals for the scan's unknown contracts, and notes on surfaces no shim can come from."""
    notes, groups = [], {}
    for r in scan.results:
        if r.status != UNKNOWN:
            if r.status == MISSING and r.surface.required:
                notes.append(f"{r.surface.id}: missing; nothing to derive a shim from, a human must find where "
                             "it went")
            continue
        module = nearest_shim(r)
        if module is None:
            notes.append(f"{r.surface.id}: unknown contract, but no shim wraps or reads this surface, so no "
                         f"shim needs changing; add the contract to the catalog after checking the change "
                         f"({'; '.join(d.render() for d in r.drifts)})")
            continue
        groups.setdefault(module, []).append(r)
    return [_generate(module, results, scan) for module, results in groups.items()], notes


# ------------------------------------------------------------------ generation

def _generate(module, results, scan) -> Proposal:
    nearest = module.__name__.rsplit(".", 1)[-1]
    source = Path(module.__file__).read_text()
    tree = cst.parse_module(source)
    contracts, claimed, todos, derived, added = {}, [], [], [], {}
    for r in results:
        contract = new_contract(r, scan.version)
        contracts[r.surface.id] = contract.id
        added[r.surface.id] = contract
        surface_todos = []
        tree, notes = _adapt_wrapper(tree, module, r, contract, surface_todos)
        derived += notes
        surface_todos += _check_returns(module, r, contract, derived)
        surface_todos += [f"{r.surface.id}: {d.render()} changes what the surface means, not its shape; check the "
                          "shim's assumptions by hand" for d in r.drifts if _aspect_of(d) not in SHAPE_ASPECTS]
        if surface_todos:
            todos += surface_todos
        else:
            claimed.append(r.surface.id)
    digest = hashlib.sha1(json.dumps(contracts, sort_keys=True).encode()).hexdigest()[:6]
    name = f"{nearest}_gen_{digest}"
    tree = tree.visit(_Header(name, nearest, scan, contracts, claimed, added, todos))
    code = tree.code
    compile(code, name, "exec")  # a generator bug must not reach the user's disk
    return Proposal(name, nearest, module.HOOK_POINT, contracts, claimed, code,
                    _test_module(name, module.HOOK_POINT, getattr(module, "RUNNER", None) or "v1", scan, contracts,
                                 claimed), source, todos, derived)


def _aspect_of(drift) -> str:
    return "return_names" if drift.aspect == "return_arity" else drift.aspect


def _check_returns(module, result, contract, derived: list) -> list[str]:
    if not any(_aspect_of(d) == "return_names" for d in result.drifts):
        return []
    used = getattr(module, "RETURN_NAMES_USED", {}).get(result.surface.id)
    if used is None:
        derived.append(f"{result.surface.id}: return shape changed; the shim passes the return through unread")
        return []
    names = contract.aspects.get("return_names", ReturnNames(None)).positions()
    gone = [n for n in used if n not in names]
    if gone:
        return [f"{result.surface.id}: the return no longer names {', '.join(gone)}; map it by hand"]
    derived.append(f"{result.surface.id}: return positions come from the new contract's return_names "
                   f"{contract.aspects.get('return_names')}")
    return []


def _adapt_wrapper(tree, module, result, contract, todos: list):
    """Realign the wrapper of the surface's method to its new signature / descriptor."""
    method = result.surface.qualname.rsplit(".", 1)[-1]
    makers = _patch_makers(tree)
    sig_drifts = [d for d in result.drifts if _aspect_of(d) == "signature"]
    to_static = any(d.kind is DriftKind.DESCRIPTOR_CHANGED and d.new == "staticmethod" for d in result.drifts)
    if not sig_drifts and not to_static:
        return tree, []
    shared = makers.get(None, set())
    if method not in makers and shared and method in _string_literals(tree):
        # Patch(owner, name, make) with a computed name over a list that includes this method
        todos.append(f"{result.surface.id}: {', '.join(sorted(shared))}() wraps several methods, {method} among "
                     "them; split it before changing its signature")
        return tree, []
    if method not in makers:
        # The shim does not wrap this method: only a call it makes can break.
        breaking = [d for d in sig_drifts if d.kind is not DriftKind.PARAM_ADDED or not d.new.has_default]
        if breaking and _calls(tree, method):
            todos.append(f"{result.surface.id}: the shim calls {method}(), whose parameters changed "
                         f"({'; '.join(d.render() for d in breaking)}); update the call by hand")
            return tree, []
        return tree, [f"{result.surface.id}: signature/descriptor changed; the shim does not wrap {method}() "
                      "and calls it with nothing that changed"]
    maker = makers[method]
    if sum(1 for m in makers.values() if m == maker) > 1 or maker in makers.get(None, ()):
        todos.append(f"{result.surface.id}: {maker}() wraps several methods; split it before changing its "
                     "signature")
        return tree, []
    new_params = contract.aspects.get("signature", Signature()).positional()
    renames = {d.old.name: d.new.name for d in sig_drifts if d.kind is DriftKind.PARAM_RENAMED}
    adapter = _WrapperRewrite(maker, list(new_params), renames, to_static)
    tree = tree.visit(adapter)
    todos += [f"{result.surface.id}: {t}" for t in adapter.todos]
    return tree, [f"{result.surface.id}: {n}" for n in adapter.notes]


def _patch_makers(tree) -> dict:
    """method name -> the `make...` function passed to Patch(owner, "method", make, ...);
    key None collects makers used with a computed method name (one wrapper, many methods)."""
    out: dict = {}

    class Find(cst.CSTVisitor):
        def visit_Call(self, node: cst.Call) -> None:
            if isinstance(node.func, cst.Name) and node.func.value == "Patch" and len(node.args) >= 3:
                name, make = node.args[1].value, node.args[2].value
                if isinstance(make, cst.Name):
                    if isinstance(name, cst.SimpleString):
                        out[name.evaluated_value] = make.value
                    else:
                        out.setdefault(None, set()).add(make.value)

    tree.visit(Find())
    return out


def _string_literals(tree) -> set:
    found = set()

    class Find(cst.CSTVisitor):
        def visit_SimpleString(self, node: cst.SimpleString) -> None:
            found.add(node.evaluated_value)

    tree.visit(Find())
    return found


def _calls(tree, method: str) -> bool:
    found = []

    class Find(cst.CSTVisitor):
        def visit_Attribute(self, node: cst.Attribute) -> None:
            if node.attr.value == method:
                found.append(node)

    tree.visit(Find())
    return bool(found)


class _WrapperRewrite(cst.CSTTransformer):
    """Inside `def <maker>(original)`: the nested wrapper's parameters and its `original(...)` call."""

    def __init__(self, maker: str, new_positional: list[str], renames: dict, to_static: bool) -> None:
        self.maker, self.new, self.renames, self.to_static = maker, new_positional, renames, to_static
        self.depth = 0
        self.in_maker = False
        self.todos: list[str] = []
        self.notes: list[str] = []
        self.target: list[str] | None = None  # the wrapper's named parameters, after the rewrite

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        if node.name.value == self.maker:
            self.in_maker = True
        elif self.in_maker:
            self.depth += 1

    def leave_FunctionDef(self, original: cst.FunctionDef, updated: cst.FunctionDef):
        if original.name.value == self.maker:
            self.in_maker = False
            return updated
        if not self.in_maker:
            return updated
        self.depth -= 1
        if self.depth:
            return updated
        params = list(updated.params.params)
        has_self = bool(params) and params[0].name.value == "self"
        named = [p.name.value for p in params[1 if has_self else 0:]]
        renamed = [self.renames.get(n, n) for n in named]
        for old, new in zip(named, renamed):
            if old != new:
                self.notes.append(f"wrapper parameter {old} renamed to {new}")
        gone = [n for n in renamed if n not in self.new]
        if gone:
            self.todos.append(f"the wrapper uses parameter(s) {', '.join(gone)}, which the new signature "
                              "no longer has")
            return updated
        last = max((self.new.index(n) for n in renamed), default=-1)
        target = self.new[: last + 1]
        if target != renamed:
            self.notes.append(f"wrapper parameters ({', '.join(named)}) -> ({', '.join(target)})")
        keep_self = has_self and not self.to_static
        if has_self and self.to_static:
            if _uses_name(updated.body, "self", skip_call_to="original"):
                self.todos.append("the method became static but the wrapper uses self; rewrite it by hand")
                return updated
            self.notes.append("method is now static: self dropped from the wrapper and its call")
        self.target = (["self"] if keep_self else []) + target
        new_params = [cst.Param(cst.Name(n)) for n in self.target]
        updated = updated.with_changes(params=updated.params.with_changes(params=new_params))
        return updated.visit(_RenameAndCall(self.renames, self.target))


class _RenameAndCall(cst.CSTTransformer):
    def __init__(self, renames: dict, target: list[str]) -> None:
        self.renames, self.target = renames, target

    def leave_Name(self, original: cst.Name, updated: cst.Name):
        return updated.with_changes(value=self.renames.get(updated.value, updated.value))

    # attribute names (HOOKS.x) and keywords (f(x=...)) are not the parameter: keep them
    def leave_Attribute(self, original: cst.Attribute, updated: cst.Attribute):
        return updated.with_changes(attr=original.attr)

    def leave_Arg(self, original: cst.Arg, updated: cst.Arg):
        return updated.with_changes(keyword=original.keyword)

    def leave_Call(self, original: cst.Call, updated: cst.Call):
        if not (isinstance(updated.func, cst.Name) and updated.func.value == "original"):
            return updated
        rest = [a for a in updated.args if a.star]  # *args, **kwargs pass through
        return updated.with_changes(args=[cst.Arg(cst.Name(n)) for n in self.target] + rest)


def _uses_name(body, name: str, skip_call_to: str) -> bool:
    found = []

    class Find(cst.CSTVisitor):
        def visit_Call(self, node: cst.Call) -> bool:
            if isinstance(node.func, cst.Name) and node.func.value == skip_call_to:
                for arg in node.args[1:]:
                    arg.visit(self)
                return False
            return True

        def visit_Name(self, node: cst.Name) -> None:
            if node.value == name:
                found.append(node)

    body.visit(Find())
    return bool(found)


class _Header(cst.CSTTransformer):
    """Docstring, HANDLES for the claimed surfaces, GENERATED and CONTRACTS after HANDLES."""

    def __init__(self, name, nearest, scan, contracts, claimed, added, todos) -> None:
        self.name, self.nearest, self.scan = name, nearest, scan
        self.contracts, self.claimed, self.added, self.todos = contracts, claimed, added, todos

    def leave_Module(self, original: cst.Module, updated: cst.Module) -> cst.Module:
        body = list(updated.body)
        lines = [f"Generated by `driftcheck propose` from shims/{self.nearest}.py for vLLM {self.scan.version} "
                 f"(fingerprint {self.scan.fingerprint.digest}). NOT REVIEWED.", "",
                 "New contracts (CONTRACTS below):"]
        lines += [f"  {s}: {c.id} - {c.summary}" for s, c in self.added.items()]
        if self.todos:
            lines += ["", "Not claimed in HANDLES until a human has done this:"]
            lines += [f"  {TODO}: {t}" for t in self.todos]
        lines += ["", "Once reviewed: move it into shims/, add it to SHIM_MODULES and its contracts to the",
                  "catalog, and delete GENERATED."]
        lines = [w for line in lines for w in (textwrap.wrap(line, 110, subsequent_indent="    ") or [""])]
        doc = cst.SimpleStatementLine([cst.Expr(cst.SimpleString('"""' + "\n".join(lines).replace('"""', "'''")
                                                                 + '\n"""'))])
        if body and _is_docstring(body[0]):
            body[0] = doc
        else:
            body.insert(0, doc)
        out, imported = [], False
        for stmt in body:
            module = _imported_module(stmt)
            if not imported and module.startswith("driftcheck.") and module > "driftcheck.contracts.catalog":
                out.append(cst.parse_statement("from driftcheck.contracts.catalog import C\n"))  # in isort order
                imported = True
            out.append(stmt)
            if _assigns(stmt, "HANDLES"):
                out += self._declarations()
        return updated.with_changes(body=out)

    def leave_Assign(self, original: cst.Assign, updated: cst.Assign):
        if not (len(updated.targets) == 1 and isinstance(updated.targets[0].target, cst.Name)
                and updated.targets[0].target.value == "HANDLES" and isinstance(updated.value, cst.Dict)):
            return updated
        elements = []
        for el in updated.value.elements:
            key = el.key.evaluated_value if isinstance(el.key, cst.SimpleString) else None
            if key in self.claimed:
                el = el.with_changes(value=cst.parse_expression(f'("{self.contracts[key]}",)'))
            elements.append(el)
        return updated.with_changes(value=updated.value.with_changes(elements=elements))

    def _declarations(self) -> list:
        generated = {"from": self.nearest, "vllm": self.scan.version, "fingerprint": self.scan.fingerprint.digest,
                     "reviewed": False}
        entries = []
        for surface, c in self.added.items():
            args = ", ".join([json.dumps(c.id), json.dumps(c.summary), json.dumps(str(c.seen_in))]
                             + [f"{k}={json.dumps(str(v))}" for k, v in c.aspects.items()])
            entries.append(f"    {json.dumps(surface)}: (\n        C({args}),\n    ),")
        code = ("#: What generated this module; `driftcheck shims` lists it as not reviewed.\n"
                f"GENERATED = {json.dumps(generated)}\n"
                "#: The contracts this shim was generated for, in catalog form.\n"
                "CONTRACTS = {\n" + "\n".join(entries) + "\n}\n")
        code = code.replace("false", "False")
        parsed = cst.parse_module(code)
        body = list(parsed.body)
        # a module's leading comments parse as its header; keep them on the first statement
        body[0] = body[0].with_changes(leading_lines=[*parsed.header, *body[0].leading_lines])
        return body


def _is_docstring(stmt) -> bool:
    return (isinstance(stmt, cst.SimpleStatementLine) and isinstance(stmt.body[0], cst.Expr)
            and isinstance(stmt.body[0].value, cst.SimpleString))


def _assigns(stmt, name: str) -> bool:
    return (isinstance(stmt, cst.SimpleStatementLine) and isinstance(stmt.body[0], cst.Assign)
            and any(isinstance(t.target, cst.Name) and t.target.value == name for t in stmt.body[0].targets))


def _imported_module(stmt) -> str:
    """'a.b' for `from a.b import x`, else ''."""
    if not (isinstance(stmt, cst.SimpleStatementLine) and isinstance(stmt.body[0], cst.ImportFrom)
            and stmt.body[0].module is not None):
        return ""
    return cst.Module([]).code_for_node(stmt.body[0].module)


def _test_module(name: str, hook_point: str, runner: str, scan, contracts: dict, claimed: list) -> str:
    source = scan.source
    expected = {s: contracts[s] for s in claimed}
    func = re.sub(r"\W", "_", name)
    return f'''"""Generated by `driftcheck propose` with {name}.py: the shim against the source it was made from."""

import os

import pytest

SCANNED = {json.dumps(source)}
SHIM_DIR = os.path.dirname(os.path.abspath(__file__))
EXPECTED = {json.dumps(expected, indent=4)}


@pytest.mark.skipif(not os.path.exists(SCANNED), reason="the scanned source is not on this machine")
def test_{func}_matches_and_is_selected(monkeypatch):
    monkeypatch.setenv("DRIFTCHECK_SHIM_PATH", SHIM_DIR)
    from driftcheck.readers.source_tree import open_tree
    from driftcheck.scan import scan_tree

    kind = "wheel" if SCANNED.endswith(".whl") else "source"
    scan = scan_tree(open_tree(**{{kind: SCANNED}}))
    for surface, contract in EXPECTED.items():
        assert scan.fingerprint.contracts[surface] == contract
    runner = {json.dumps(runner)}
    assert scan.plan.selected[runner][{json.dumps(hook_point)}].__name__.endswith({json.dumps(name)})
'''


def write(proposals: list[Proposal], out_dir: Path, force: bool = False) -> list[Path]:
    """Each proposal's shim and test module into out_dir, whole files or none (driftcheck.files).

    A same-named file already there is replaced only if it is an unreviewed generated shim or the
    test module beside one (or already holds exactly the new text); anything else, a reviewed
    shim above all, is BadInput unless `force`.
    """
    files = {}
    for p in proposals:
        shim, test = out_dir / f"{p.name}.py", out_dir / f"test_{p.name}.py"
        files[shim], files[test] = p.code, p.test_code
        if not force:
            shim_text = _existing(shim)
            replaceable = shim_text is None or shim_text == p.code or _unreviewed_generated(shim_text)
            if not replaceable:
                raise BadInput(f"{shim} is a reviewed shim (or was not generated by driftcheck propose): "
                               "not overwritten; pass --force to overwrite it")
            test_text = _existing(test)
            if test_text is not None and test_text != p.test_code and shim_text is None:
                raise BadInput(f"{test} exists and belongs to no generated shim: not overwritten; "
                               "pass --force to overwrite it")
    return write_files(files)


def _existing(path: Path) -> str | None:
    from driftcheck.files import read_regular

    data = read_regular(path, 16 << 20)
    return None if data is None else data.decode("utf-8", errors="replace")


def _unreviewed_generated(text: str) -> bool:
    """Whether module text declares `GENERATED = {..., "reviewed": False}` (read, never run)."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    for stmt in tree.body:
        if (isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "GENERATED" for t in stmt.targets)):
            try:
                value = ast.literal_eval(stmt.value)
            except (ValueError, SyntaxError, RecursionError, MemoryError, TypeError):
                return False
            return isinstance(value, dict) and value.get("reviewed") is False
    return False
