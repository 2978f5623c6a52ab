"""Property tests (hypothesis) for the parts that parse signatures and return shapes.

The static reader is checked differentially against Python itself: a generated
function is both read with libcst and exec'd and read with inspect; both must
give the same signature. Return statements are generated and read back.
"""

from __future__ import annotations

import keyword

from hypothesis import given, settings
from hypothesis import strategies as st

from driftcheck.contracts.matching import aspect_drifts, signature_drifts
from driftcheck.contracts.observation import Param
from driftcheck.contracts.values import ReturnNames, Signature
from driftcheck.readers.live import inspect_signature
from driftcheck.readers.observe_static import return_arity, return_names
from driftcheck.readers.source_tree import DirTree
from driftcheck.readers.static_reader import StaticReader, mangled

names = st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True).filter(
    lambda s: not keyword.iskeyword(s) and s not in ("self", "cls")
)


@st.composite
def signatures(draw):
    """(source of the parameter list, expected Params) for a random legal signature."""
    pool = draw(st.lists(names, min_size=0, max_size=9, unique=True))
    it = iter(pool)
    parts, params = [], []
    n_pos = draw(st.integers(0, len(pool)))
    seen_default = False
    for _ in range(n_pos):
        name = next(it)
        default = seen_default or draw(st.booleans())
        seen_default = seen_default or default
        parts.append(f"{name}=1" if default else name)
        params.append(Param(name, "POSITIONAL_OR_KEYWORD", default))
    rest = list(it)
    var_kw = rest.pop() if rest and draw(st.booleans()) else None
    var_pos = rest.pop(0) if rest and draw(st.booleans()) else None
    if var_pos:
        parts.append(f"*{var_pos}")
        params.append(Param(var_pos, "VAR_POSITIONAL", False))
    elif rest:
        parts.append("*")  # keyword-only parameters follow
    for name in rest:
        default = draw(st.booleans())
        parts.append(f"{name}=None" if default else name)
        params.append(Param(name, "KEYWORD_ONLY", default))
    if var_kw:
        parts.append(f"**{var_kw}")
        params.append(Param(var_kw, "VAR_KEYWORD", False))
    return ", ".join(parts), tuple(params)


def _read(source: str, qualname: str, tmp_path):
    root = tmp_path
    (root / "vllm").mkdir(exist_ok=True)
    (root / "vllm" / "__init__.py").write_text("")
    (root / "vllm" / "m.py").write_text(source)
    return StaticReader(DirTree(root=root)).function("vllm.m", qualname)


@settings(max_examples=60, deadline=None)
@given(sig=signatures(), static=st.booleans())
def test_static_signature_equals_inspect(tmp_path_factory, sig, static):
    params_src, expected = sig
    tmp = tmp_path_factory.mktemp("sig")
    head = "    @staticmethod\n    def f(" + params_src if static else "    def f(self" + (", " if params_src else "") + params_src
    source = "class K:\n" + head + "):\n        return None\n"
    fn = _read(source, "K.f", tmp)
    namespace: dict = {}
    exec(compile(source, "m.py", "exec"), namespace)  # noqa: S102 - our own generated code
    live = inspect_signature(namespace["K"].f, drop_first=not static)
    expected = mangled(expected, "K")  # Python compiles `__x` in class K as `_K__x`
    assert [(p.name, p.kind, p.has_default) for p in fn.params] == [(p.name, p.kind, p.has_default) for p in live]
    assert [(p.name, p.kind, p.has_default) for p in fn.params] == [(p.name, p.kind, p.has_default) for p in expected]
    assert fn.descriptor == ("staticmethod" if static else "instance")
    # the rendered signature parses back to the same names/defaults
    parsed = Signature.parse(str(fn.signature()))
    assert list(parsed.names) == [p.name for p in expected]
    assert str(parsed) == str(fn.signature()) and parsed == fn.signature()


@settings(max_examples=60, deadline=None)
@given(elements=st.lists(names, min_size=1, max_size=7, unique=True), wrap=st.booleans(), n_returns=st.integers(1, 3))
def test_return_statements_read_back(tmp_path_factory, elements, wrap, n_returns):
    tmp = tmp_path_factory.mktemp("ret")
    value = ", ".join(elements)
    if wrap:
        value = "(\n        " + ",\n        ".join(elements) + ",\n    )"
    if len(elements) == 1 and not wrap:
        expected_arity = "value"
    else:
        expected_arity = f"tuple/{len(elements)}"
    body = "".join(f"    if x == {i}:\n        return {value}\n" for i in range(n_returns - 1)) + f"    return {value}\n"
    fn = _read(f"def g(x):\n{body}", "g", tmp)
    assert len(fn.returns) == n_returns
    assert return_arity(fn) == expected_arity
    if expected_arity != "value":
        assert str(return_names(fn)) == "(" + ", ".join(elements) + ")"


@given(old=st.lists(names, min_size=1, max_size=6, unique=True), data=st.data())
def test_reordered_returns_are_named_as_reordered(old, data):
    new = data.draw(st.permutations(old))
    drifts = aspect_drifts("return_names", ReturnNames.parse("(" + ", ".join(old) + ")"),
                           ReturnNames.parse("(" + ", ".join(new) + ")"))
    if list(new) == old:
        assert drifts == []
    else:
        assert [d.kind for d in drifts] == ["return-reordered"]


@given(params=st.lists(names, min_size=1, max_size=6, unique=True), extra=names, data=st.data())
def test_added_parameter_is_named(params, extra, data):
    if extra in params:
        return
    pos = data.draw(st.integers(0, len(params)))
    with_default = data.draw(st.booleans())
    new = params[:pos] + [extra + ("=" if with_default else "")] + params[pos:]
    drifts = signature_drifts(Signature.parse("(" + ", ".join(params) + ")"), Signature.parse("(" + ", ".join(new) + ")"))
    assert [d.render() for d in drifts] == [
        f"param-added: {extra} " + ("(with default)" if with_default else "(required)")
    ]


@given(params=st.lists(names, min_size=1, max_size=6, unique=True), data=st.data())
def test_renamed_parameter_is_named(params, data):
    i = data.draw(st.integers(0, len(params) - 1))
    new_name = data.draw(names.filter(lambda n: n not in params))
    new = params[:i] + [new_name] + params[i + 1:]
    drifts = signature_drifts(Signature.parse("(" + ", ".join(params) + ")"), Signature.parse("(" + ", ".join(new) + ")"))
    assert [d.render() for d in drifts] == [f"param-renamed: {params[i]} -> {new_name}"]
