"""Live reader (`driftcheck scan --live`): import the installed vLLM, check the
surfaces with inspect, then run the built-in tiny model on a real engine and
watch what the surfaces actually return and which request ids the runner sees.

The live work runs in a child process (`python -m driftcheck.live_reader`):
a crash or a hang there becomes one line and exit code 4, and the parent's
process never imports torch. The child runs the engine in-process
(VLLM_ENABLE_V1_MULTIPROCESSING=0) so its temporary observers see the runner;
where a release still forks a worker for the model, the observers it inherits
report through files. An observer that never fires fails the check (exit 4).
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from driftcheck.catalog import surfaces
from driftcheck.errors import LiveCheckFailed
from driftcheck.observation import Param

LIVE_TIMEOUT_S = 300
_KIND = {
    inspect.Parameter.POSITIONAL_ONLY: "POSITIONAL_ONLY",
    inspect.Parameter.POSITIONAL_OR_KEYWORD: "POSITIONAL_OR_KEYWORD",
    inspect.Parameter.VAR_POSITIONAL: "VAR_POSITIONAL",
    inspect.Parameter.KEYWORD_ONLY: "KEYWORD_ONLY",
    inspect.Parameter.VAR_KEYWORD: "VAR_KEYWORD",
}


# --------------------------------------------------------------------------- parent side

def run_live(scan) -> None:
    """Run the child, attach its findings to `scan`, record static/live disagreements."""
    from driftcheck.tiny_model import cpu_engine_env

    env = {**cpu_engine_env(), **os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "driftcheck.live_reader"],
            capture_output=True, text=True, timeout=LIVE_TIMEOUT_S, env=env,
        )
    except subprocess.TimeoutExpired:
        raise LiveCheckFailed(f"live check did not finish in {LIVE_TIMEOUT_S} s") from None
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("DRIFTCHECK_LIVE ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise LiveCheckFailed(f"live check failed (exit {proc.returncode}): {tail}")
    live = json.loads(lines[-1][len("DRIFTCHECK_LIVE "):])
    if not live.get("hits"):
        # Observers that never fired would make every live finding vacuous ("passthrough" ids
        # from an empty set): the model ran somewhere they could not see.
        raise LiveCheckFailed(f"live check saw no call to {', '.join(OBSERVED_SURFACES)} in {live.get('steps')} "
                              "engine steps: the model ran outside the observed process")
    live["seconds"] = round(time.perf_counter() - t0, 1)
    scan.live = live
    scan.disagreements = compare(scan, live)


def compare(scan, live: dict) -> list[str]:
    """Where the imported vLLM contradicts what the static reader read."""
    out = []
    by_id = {r.surface.id: r for r in scan.results}
    for sid, seen in live.get("inspect", {}).items():
        static = by_id.get(sid)
        if static is None:
            continue
        for aspect in ("present", "signature", "descriptor"):
            if aspect in seen and aspect in static.observation.aspects and seen[aspect] != static.observation.aspects[aspect]:
                out.append(f"{sid}: {aspect} static={static.observation.aspects[aspect]} live={seen[aspect]}")
    for sid, arity in live.get("returns", {}).items():
        static = by_id.get(sid)
        if static is None or not arity:
            continue
        expected = _static_arity(static.observation.aspects)
        if expected and expected not in arity:
            out.append(f"{sid}: returns static={expected} live={', '.join(sorted(arity))}")
    ids = live.get("request_ids", {})
    static = by_id.get("engine.request_ids")
    if ids.get("behaviour") and static is not None:
        static_kind = static.observation.aspects.get("request_ids", "").split(" ")[0]
        if ids["behaviour"] != static_kind:
            out.append(f"engine.request_ids: static={static_kind} live={ids['behaviour']} ({ids.get('example')})")
    for name in live.get("missing_fields", []):
        out.append(f"input_batch.fields: live InputBatch has no {name}")
    return out


def _static_arity(aspects: dict) -> str | None:
    if "return_arity" in aspects:
        return aspects["return_arity"]
    names = aspects.get("return_names")
    if names and names.startswith("("):
        return f"tuple/{len(names.strip('()').split(','))}"
    return None


# --------------------------------------------------------------------------- child side

def inspect_signature(obj, drop_first: bool) -> tuple[Param, ...]:
    params = list(inspect.signature(obj).parameters.values())
    if drop_first and params:
        params = params[1:]
    return tuple(Param(p.name, _KIND[p.kind], p.default is not inspect.Parameter.empty) for p in params)


def _descriptor(raw) -> str:
    if isinstance(raw, staticmethod):
        return "staticmethod"
    if isinstance(raw, classmethod):
        return "classmethod"
    if isinstance(raw, property) or type(raw).__name__ == "cached_property":
        return "property"
    return "instance"


def inspect_surfaces() -> dict:
    """Signature and descriptor kind of each function surface, from the imported module."""
    import importlib

    out = {}
    for s in surfaces():
        if s.kind not in ("function", "request_ids", "child_ids", "plugins"):
            continue
        try:
            obj = importlib.import_module(s.module)
            owner = None
            for part in s.qualname.split("."):
                owner, obj = obj, getattr(obj, part)
        except (ImportError, AttributeError):
            out[s.id] = {"present": "no"}
            continue
        if inspect.isclass(owner):
            raw = inspect.getattr_static(owner, s.qualname.split(".")[-1])
            descriptor = _descriptor(raw)
        else:
            descriptor = "function"
        params = inspect_signature(obj, drop_first=descriptor in ("instance",))
        if descriptor == "classmethod":
            params = inspect_signature(obj, drop_first=False)  # bound: cls already gone
        out[s.id] = {
            "present": "yes",
            "descriptor": descriptor,
            "signature": "(" + ", ".join(p.render() for p in params) + ")",
        }
    return out


def _arity(value) -> str:
    return f"tuple/{len(value)}" if isinstance(value, tuple) else "value"


OBSERVED_SURFACES = ("runner.prepare_inputs", "sampler.sample", "topk_topp.forward_native", "topk_topp.forward_cpu")


ENV_LIVE_DIR = "DRIFTCHECK_LIVE_DIR"  # where observers in other processes report (set by the live child)
ENV_LIVE_PID = "DRIFTCHECK_LIVE_PID"  # the live child's pid: it observes itself, others report by file


class Observers:
    """Temporary wrappers on the surfaces whose runtime behaviour matters: hits, return
    shapes, the request ids the runner sees, the input-batch fields it has."""

    def __init__(self, report_dir: str | None = None) -> None:
        self.hits: dict[str, int] = {}
        self.returns: dict[str, set] = {}
        self.runner_ids: set[str] = set()
        self.missing_fields: set[str] = set()
        self.report_dir = report_dir  # set in a process other than the live child's
        self.originals: list = []

    def install(self) -> None:
        from vllm.v1.sample import sampler as sampler_mod
        from vllm.v1.sample.ops import topk_topp_sampler as tt
        from vllm.v1.worker import gpu_model_runner as gmr

        self._observe(gmr.GPUModelRunner, "_prepare_inputs", "runner.prepare_inputs", self._see_batch)
        self._observe(sampler_mod.Sampler, "sample", "sampler.sample")
        self._observe(tt.TopKTopPSampler, "forward_native", "topk_topp.forward_native")
        self._observe(tt.TopKTopPSampler, "forward_cpu", "topk_topp.forward_cpu")

    def remove(self) -> None:
        for owner, name, raw in reversed(self.originals):
            setattr(owner, name, raw)
        self.originals.clear()

    def _observe(self, owner, name, surface, on_call=None) -> None:
        raw = inspect.getattr_static(owner, name, None)
        if raw is None:
            return
        fn = raw.__func__ if isinstance(raw, (staticmethod, classmethod)) else raw

        def wrapper(*args, **kwargs):
            result = fn(*args, **kwargs)
            self.hits[surface] = self.hits.get(surface, 0) + 1
            self.returns.setdefault(surface, set()).add(_arity(result))
            if on_call:
                on_call(args)
            if self.report_dir:
                self._report()
            return result

        wrapped = type(raw)(wrapper) if isinstance(raw, (staticmethod, classmethod)) else wrapper
        self.originals.append((owner, name, raw))
        setattr(owner, name, wrapped)

    def _see_batch(self, args) -> None:
        from driftcheck.catalog import ESAMP_INPUT_BATCH_FIELDS

        batch = getattr(args[0], "input_batch", None)
        if batch is None:
            return
        for f in ESAMP_INPUT_BATCH_FIELDS:
            if not hasattr(batch, f):
                self.missing_fields.add(f)
        self.runner_ids.update(r for r in getattr(batch, "req_ids", []) if r)

    def _report(self) -> None:
        from driftcheck.report import write_atomic

        payload = {"hits": self.hits, "returns": {k: sorted(v) for k, v in self.returns.items()},
                   "runner_ids": sorted(self.runner_ids), "missing_fields": sorted(self.missing_fields)}
        write_atomic(os.path.join(self.report_dir, f"findings-{os.getpid()}.json"), json.dumps(payload))

    def merge_reports(self, report_dir: str) -> None:
        """Fold in what observers in other processes (workers) reported."""
        for name in sorted(os.listdir(report_dir)):
            if not name.startswith("findings-"):
                continue
            with open(os.path.join(report_dir, name)) as f:
                part = json.load(f)
            for surface, n in part["hits"].items():
                self.hits[surface] = self.hits.get(surface, 0) + n
            for surface, shapes in part["returns"].items():
                self.returns.setdefault(surface, set()).update(shapes)
            self.runner_ids.update(part["runner_ids"])
            self.missing_fields.update(part["missing_fields"])


def observe_in_worker() -> None:
    """Called by the plugin entry point in every vLLM process: observe there too when a live
    check runs (some releases put the model in a spawned worker whatever the settings:
    0.20.x on the CPU forces the mp executor and spawn)."""
    report_dir = os.environ.get(ENV_LIVE_DIR)
    if not report_dir or os.environ.get(ENV_LIVE_PID) == str(os.getpid()):
        return
    Observers(report_dir).install()


def observe_engine() -> dict:
    """Run the tiny model with the observers on, here and in any process vLLM starts."""
    from vllm import LLM, SamplingParams

    from driftcheck.tiny_model import ensure_tiny_model, tiny_engine_kwargs

    report_dir = tempfile.mkdtemp(prefix="driftcheck-live-")
    os.environ[ENV_LIVE_DIR], os.environ[ENV_LIVE_PID] = report_dir, str(os.getpid())
    seen = Observers()
    seen.install()
    try:
        # "uni": the worker in this process where the release allows it.
        llm = LLM(model=str(ensure_tiny_model()), distributed_executor_backend="uni", **tiny_engine_kwargs())
        engine = llm.llm_engine
        caller_ids = ["dc-live-a", "dc-live-b"]
        params = SamplingParams(n=2, max_tokens=8, temperature=0.8, top_p=0.9, seed=7)
        for rid, prompt in zip(caller_ids, ["hello world", "the quick brown fox jumps"]):
            engine.add_request(rid, prompt, params)
        output_ids = set()
        steps = 0
        while engine.has_unfinished_requests() and steps < 200:
            for out in engine.step():
                output_ids.add(out.request_id)
            steps += 1
    finally:
        seen.remove()
    seen.merge_reports(report_dir)
    shutil.rmtree(report_dir, ignore_errors=True)
    return {
        "returns": {k: sorted(v) for k, v in seen.returns.items()},
        "hits": seen.hits,
        "steps": steps,
        "missing_fields": sorted(seen.missing_fields),
        "request_ids": classify_request_ids(caller_ids, sorted(seen.runner_ids), sorted(output_ids)),
    }


def classify_request_ids(caller_ids: list[str], runner_ids: list[str], output_ids: list[str]) -> dict:
    """passthrough: the runner sees the caller's ids (or the n>1 children 'i_<id>');
    reassigned: the runner sees other ids (e.g. '<id>-1a2b3c4d')."""
    def owner(rid: str) -> str | None:
        for cid in caller_ids:
            if rid == cid or rid.endswith("_" + cid):
                return cid
        return None

    foreign = [r for r in runner_ids if owner(r) is None]
    return {
        "behaviour": "reassigned" if foreign else "passthrough",
        "example": foreign[0] if foreign else (runner_ids[0] if runner_ids else None),
        "runner_ids": runner_ids,
        "output_ids": output_ids,
        "outputs_return_caller_ids": sorted(set(output_ids)) == sorted(caller_ids),
    }


def _child_main() -> None:
    t0 = time.perf_counter()
    try:
        import vllm
    except Exception as exc:  # noqa: BLE001 - any import failure is the finding
        print(f"cannot import vllm: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(4)
    result = {"vllm_version": getattr(vllm, "__version__", None), "inspect": inspect_surfaces()}
    result["import_seconds"] = round(time.perf_counter() - t0, 1)
    result.update(observe_engine())
    result["summary"] = {
        "engine_steps": result["steps"],
        "request_ids": result["request_ids"]["behaviour"],
        "hits": result["hits"],
    }
    print("DRIFTCHECK_LIVE " + json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    _child_main()
