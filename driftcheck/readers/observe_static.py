"""Turns what the static reader finds into each surface's aspect values (typed, see
driftcheck.contracts.values).

One function per surface kind (see Surface.kind in the catalog); each reads
only the files its surface names.
"""

from __future__ import annotations

from driftcheck.contracts.catalog import SURFACES, Surface
from driftcheck.contracts.matching import with_derived
from driftcheck.contracts.observation import FunctionObservation, SurfaceObservation
from driftcheck.contracts.values import NameList, RequestIds, ReturnNames
from driftcheck.readers.source_tree import SourceTree
from driftcheck.readers.static_reader import StaticReader, SurfaceNotFound, find_methods, imported_names


def return_arity(fn: FunctionObservation) -> str:
    """'value' or 'tuple/N' over the function's return statements (bare returns ignored)."""
    arities = {r.arity for r in fn.returns if r.arity != 0}
    if not arities and fn.annotation_arity:
        return f"tuple/{fn.annotation_arity}"
    if arities == {None} or not arities:
        return "value"
    if len(arities) == 1:
        return f"tuple/{arities.pop()}"
    return "mixed/" + "|".join(sorted("value" if a is None else str(a) for a in arities))


def return_names(fn: FunctionObservation) -> ReturnNames:
    """Names of the returned tuple's elements; positions that differ between statements join with '|'."""
    tuples = [r for r in fn.returns if r.arity]
    if not tuples:
        return ReturnNames(None)
    if len({r.arity for r in tuples}) > 1:
        return ReturnNames(None, tuple(r.render() for r in tuples))
    columns: list[list[str]] = [[] for _ in range(tuples[0].arity)]
    for r in tuples:
        for i, name in enumerate(r.elements):
            if name not in columns[i]:
                columns[i].append(name)
    return ReturnNames(tuple("|".join(col) for col in columns))


def function_aspects(fn: FunctionObservation) -> dict:
    return {
        "present": "yes",
        "signature": fn.signature(),
        "descriptor": fn.descriptor,
        "return_arity": return_arity(fn),
        "return_names": return_names(fn),
    }


def function_detail(fn: FunctionObservation) -> dict:
    return {
        "params": [p.__dict__ for p in fn.params],
        "return_annotation": fn.return_annotation,
        "returns": [r.render() for r in fn.returns],
        "defined_in": fn.defined_in,
    }


def _observe_function(reader: StaticReader, s: Surface, obs: SurfaceObservation) -> None:
    fn = reader.function(s.module, s.qualname)
    obs.where = fn.where
    obs.aspects = with_derived(s, function_aspects(fn))
    if "final_norm" in s.aspects:
        norm_calls = sorted({c for c in fn.calls if c.rsplit(".", 1)[-1] == "norm"})
        obs.aspects["final_norm"] = _norm_call_text(fn) if norm_calls else "none"
    obs.detail = function_detail(fn)


def _norm_call_text(fn: FunctionObservation) -> str:
    """The first `... = self.norm(...)` call in the body, as written."""
    return next((text for callee, text in fn.assigned_calls if callee == "self.norm"), "self.norm(...)")


def mentioned_before(fn: FunctionObservation, first: str, then: str) -> bool:
    """Whether the body refers to `first` before `then` (in source order; a name ending in "(" is
    a call of that name or of an attribute of that name). Comments and strings never count."""
    def position(token: str) -> int:
        for i, m in enumerate(fn.mentions):
            if token.endswith("("):
                if m.endswith("(") and (m == token or m.endswith("." + token)):
                    return i
            elif m == token:
                return i
        return -1

    a, b = position(first), position(then)
    return 0 <= a < b


def _observe_members(reader: StaticReader, s: Surface, obs: SurfaceObservation) -> None:
    cls = reader.klass(s.module, s.qualname)
    obs.where = cls.where
    names = {n for n, _ in cls.members}
    obs.aspects = {"present": "yes", "members": NameList(tuple(m for m in s.options["members"] if m in names))}


def _observe_bases(reader: StaticReader, s: Surface, obs: SurfaceObservation) -> None:
    cls = reader.klass(s.module, s.qualname)
    obs.where = cls.where
    obs.aspects = {"present": "yes", "bases": NameList(cls.bases)}


def _observe_fields(reader: StaticReader, s: Surface, obs: SurfaceObservation) -> None:
    cls = reader.klass(s.module, s.qualname)
    obs.where = cls.where
    have = tuple(f for f in s.options["fields"] if f in cls.fields)
    obs.aspects = {"present": "yes", "fields": NameList(have)}
    obs.detail = {"missing": [f for f in s.options["fields"] if f not in cls.fields]}


def _observe_min_p(reader: StaticReader, s: Surface, obs: SurfaceObservation) -> None:
    cls_module, index, block = reader.resolve(s.module, s.qualname)
    obs.where = f"{index.relpath}:{block.header + 1}"
    sampler_module, sampler_qualname = s.options["sampler"].split(":")
    sample = reader.function(sampler_module, sampler_qualname)
    before = mentioned_before(sample, s.options["applied_via"], s.options["topk_topp_call"])
    obs.aspects = {
        "present": "yes",
        "module": cls_module,
        "before_topk_topp": "yes" if before else "no",
    }


def _observe_request_ids(reader: StaticReader, s: Surface, obs: SurfaceObservation) -> None:
    """passthrough, or where the engine rewrites the caller's request id.

    Looks at add_request itself and at every `self.<x>.<method>(...)` it calls whose
    method is defined in a vllm.v1.engine module that llm_engine imports. An assignment
    to `.request_id` outside a loop (loops are the n>1 child fan-out) is a rewrite,
    unless it merely stores a plain parameter name.
    """
    fn = reader.function(s.module, s.qualname)
    obs.where = fn.where
    index = reader.index(s.module)
    engine_modules = sorted({m for m in imported_names(index).values() if m.startswith("vllm.v1.engine")})
    functions = [fn]
    for call in fn.calls:
        parts = call.split(".")
        if len(parts) >= 3 and parts[0] == "self":
            for module in engine_modules:
                functions += find_methods(reader, module, parts[-1])
    rewrites = []
    for f in functions:
        for a in f.assignments:
            if a.in_loop or a.value_kind == "name":
                continue  # loops: the n>1 fan-out; a plain name: the caller's id passed along
            mutates_request = a.target.endswith(".request_id")
            rebinds_parameter = f is fn and a.target == "request_id"
            if mutates_request or rebinds_parameter:
                rewrites.append(a)
    if not rewrites:
        behaviour = RequestIds("passthrough")
    elif rewrites[0].function == s.qualname:
        behaviour = RequestIds("reassigned", "inline")
    else:
        behaviour = RequestIds("reassigned", rewrites[0].function)
    obs.aspects = {"present": "yes", "request_ids": behaviour}
    obs.detail = {"rewrites": [f"{a.function}: {a.target} = {a.value}" for a in rewrites]}


def _observe_child_ids(reader: StaticReader, s: Surface, obs: SurfaceObservation) -> None:
    fn = reader.function(s.module, s.qualname)
    obs.where = fn.where
    formats = [a.value for a in fn.assignments if a.target.endswith("req_id") or a.target.endswith("request_id")]
    obs.aspects = {"present": "yes", "child_ids": formats[0] if formats else "none"}


def _observe_plugins(reader: StaticReader, s: Surface, obs: SurfaceObservation) -> None:
    module, loader = s.target.split(":")
    fn = reader.function(module, loader)
    obs.where = fn.where
    groups = [g for g in reader.string_constants(module) if g == s.options["group"]]
    if not groups and s.options["group"] in reader.strings(module):
        groups = [s.options["group"]]
    obs.aspects = {
        "present": "yes",
        "group": groups[0] if groups else "none",
        "loaded_in": NameList(tuple(reader.modules_calling(loader, list(s.options["loaders"])))),
    }


def _expression_texts(source: str, want: str, target: str = "") -> list[str]:
    """Normalized source text of expressions in one function: want="assigned" gives the values
    assigned to `target` (e.g. 'self.use_v2_model_runner'), want="returned" every returned value."""
    import ast
    import textwrap

    out = []
    for node in ast.walk(ast.parse(textwrap.dedent(source))):
        if want == "assigned" and isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(ast.unparse(t) == target for t in targets):
                out.append((node.lineno, ast.unparse(node.value)))
        elif want == "returned" and isinstance(node, ast.Return) and node.value is not None:
            out.append((node.lineno, ast.unparse(node.value)))
    return [text for _, text in sorted(out)]  # in source order


def _observe_runner_selection(reader: StaticReader, s: Surface, obs: SurfaceObservation) -> None:
    """Which model runner a GPU worker builds: who decides (the worker reads the env var, or asks
    the config), whether the config checks the model against a default set first, and what that
    check finally returns. The allow-list's architectures go to the detail."""
    worker_module, worker_fn = s.options["worker"].split(":")
    init = reader.function(worker_module, worker_fn)
    obs.where = init.where
    decided = _expression_texts(init.source, "assigned", s.options["flag"])
    aspects = {"present": "yes", "decided_by": decided[0] if decided else "none", "default_check": "none"}
    detail: dict = {}
    if decided and decided[0].endswith("." + s.options["flag"].rsplit(".", 1)[-1]):  # a config property decides
        config_module, prop_name = s.options["config"].split(":")
        prop = reader.function(config_module, prop_name)
        obs.where = prop.where
        check_name = s.options["default_check"]
        if any(c.rsplit(".", 1)[-1] == check_name for c in prop.calls):
            check = reader.function(config_module, f"{prop_name.split('.')[0]}.{check_name}")
            returned = _expression_texts(check.source, "returned")
            aspects["default_check"] = returned[-1] if returned else "none"
            allow = reader.constant_strings(config_module, s.options["allow_list"])
            detail["allow_list"] = list(allow) if allow is not None else None
    obs.aspects, obs.detail = aspects, detail


def _observe_call_keyword(reader: StaticReader, s: Surface, obs: SurfaceObservation) -> None:
    """How a class's methods call one function: the value each call passes for one keyword
    (e.g. whether the draw applies temperature itself)."""
    import ast
    import textwrap

    cls = reader.klass(s.module, s.qualname)
    obs.where = cls.where
    callee, keyword = s.options["callee"], s.options["keyword"]
    seen, callers = [], []
    for name, _ in cls.members:
        fn = reader.function(s.module, f"{s.qualname}.{name}")
        if not any(c.rsplit(".", 1)[-1] == callee for c in fn.calls):
            continue
        for node in ast.walk(ast.parse(textwrap.dedent(fn.source))):
            if isinstance(node, ast.Call) and ast.unparse(node.func).rsplit(".", 1)[-1] == callee:
                kw = next((ast.unparse(k.value) for k in node.keywords if k.arg == keyword), "(not passed)")
                seen.append(kw)
                callers.append(name)
    obs.aspects = {"present": "yes" if seen else "no",
                   "call": f"{callee}({keyword}={'|'.join(sorted(set(seen)))})" if seen else "none"}
    obs.detail = {"callers": sorted(set(callers))}


_KINDS = {
    "function": _observe_function,
    "members": _observe_members,
    "bases": _observe_bases,
    "fields": _observe_fields,
    "min_p": _observe_min_p,
    "request_ids": _observe_request_ids,
    "child_ids": _observe_child_ids,
    "plugins": _observe_plugins,
    "runner_selection": _observe_runner_selection,
    "call_keyword": _observe_call_keyword,
}


def observe_surface(reader: StaticReader, surface: Surface) -> SurfaceObservation:
    obs = SurfaceObservation(surface=surface.id, reader="static", found=True)
    try:
        _KINDS[surface.kind](reader, surface, obs)
    except SurfaceNotFound as exc:
        obs.found = False
        obs.aspects = {"present": "no"}
        obs.note = str(exc)
    return obs


def observe_tree(tree: SourceTree, surfaces=SURFACES) -> dict[str, SurfaceObservation]:
    reader = StaticReader(tree)
    return {s.id: observe_surface(reader, s) for s in surfaces}
