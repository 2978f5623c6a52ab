"""Live reader: import the installed vLLM, read the surfaces with inspect, then run the
built-in tiny model on a real engine with temporary observers on the surfaces whose
runtime behaviour matters (what they return, which request ids the runner sees,
which input-batch fields exist). Everything it finds is a SurfaceObservation
(reader="live"), the same type the static reader emits.

It runs as a child process (`python -m driftcheck.readers.live`, started by
`driftcheck scan --live`, see driftcheck/scan.py), which prints its observations
as one JSON line: a crash or a hang there is one line and exit code 4 in the
parent, and the parent never imports torch. The engine runs in the child
(VLLM_ENABLE_V1_MULTIPROCESSING=0); where a release still starts a worker
process for the model, the observers there (bound through the plugin entry
point) report through files.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import shutil
import sys
import tempfile
import time

from driftcheck import env
from driftcheck.contracts.catalog import ESAMP_INPUT_BATCH_FIELDS, SURFACES
from driftcheck.contracts.matching import with_derived
from driftcheck.contracts.observation import KEYWORD_ONLY, POSITIONAL_ONLY, POSITIONAL_OR_KEYWORD, VAR_KEYWORD
from driftcheck.contracts.observation import VAR_POSITIONAL, Param, SurfaceObservation
from driftcheck.contracts.values import NameList, RequestIds, Signature, descriptor_of
from driftcheck.files import write_atomic
from driftcheck.patching import Patch, apply_all, restore_all

_KIND = {
    inspect.Parameter.POSITIONAL_ONLY: POSITIONAL_ONLY,
    inspect.Parameter.POSITIONAL_OR_KEYWORD: POSITIONAL_OR_KEYWORD,
    inspect.Parameter.VAR_POSITIONAL: VAR_POSITIONAL,
    inspect.Parameter.KEYWORD_ONLY: KEYWORD_ONLY,
    inspect.Parameter.VAR_KEYWORD: VAR_KEYWORD,
}

#: The surfaces the engine observers wrap (what they return is compared with the source).
OBSERVED = {
    "runner.prepare_inputs": ("vllm.v1.worker.gpu_model_runner", "GPUModelRunner", "_prepare_inputs"),
    "sampler.sample": ("vllm.v1.sample.sampler", "Sampler", "sample"),
    "topk_topp.forward_native": ("vllm.v1.sample.ops.topk_topp_sampler", "TopKTopPSampler", "forward_native"),
    "topk_topp.forward_cpu": ("vllm.v1.sample.ops.topk_topp_sampler", "TopKTopPSampler", "forward_cpu"),
}


# --------------------------------------------------------------------------- inspect

def inspect_signature(obj, drop_first: bool) -> tuple[Param, ...]:
    """The parameters inspect sees (drop_first: an unbound method's self)."""
    params = list(inspect.signature(obj).parameters.values())
    if drop_first and params:
        params = params[1:]
    return tuple(Param(p.name, _KIND[p.kind], p.default is not inspect.Parameter.empty) for p in params)


def inspect_surface(surface) -> SurfaceObservation:
    """Presence, signature and descriptor kind of one function-like surface, from the imported module."""
    obs = SurfaceObservation(surface=surface.id, reader="live", found=True)
    try:
        obj = importlib.import_module(surface.module)
        owner = None
        for part in surface.qualname.split("."):
            owner, obj = obj, getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        obs.found, obs.aspects, obs.note = False, {"present": "no"}, f"{type(exc).__name__}: {exc}"
        return obs
    if inspect.isclass(owner):
        descriptor = descriptor_of(inspect.getattr_static(owner, surface.qualname.split(".")[-1]))
    else:
        descriptor = "function"
    # an instance method read off the class still has self; a classmethod is bound already
    params = inspect_signature(obj, drop_first=descriptor == "instance")
    obs.where = f"{getattr(obj, '__module__', surface.module)}:{surface.qualname}"
    obs.aspects = with_derived(surface, {"present": "yes", "descriptor": descriptor,
                                         "signature": Signature.of_params(params)})
    return obs


def inspect_surfaces(surfaces=SURFACES) -> dict[str, SurfaceObservation]:
    """Every function-like surface of the catalog, read with inspect."""
    return {s.id: inspect_surface(s) for s in surfaces if s.kind in ("function", "request_ids", "child_ids", "plugins")}


# --------------------------------------------------------------------------- engine observers

def _arity(value) -> str:
    return f"tuple/{len(value)}" if isinstance(value, tuple) else "value"


class Observers:
    """Temporary wrappers (driftcheck.patching, reversible) on OBSERVED: hits, return shapes, the
    request ids the runner sees, the input-batch fields it has."""

    def __init__(self, report_dir: str | None = None) -> None:
        self.hits: dict[str, int] = {}
        self.returns: dict[str, set] = {}
        self.runner_ids: set[str] = set()
        self.missing_fields: set[str] = set()
        self.report_dir = report_dir  # set in a process other than the live child's
        self.patches: list[Patch] = []

    def install(self) -> None:
        patches = []
        for surface, (module, cls, name) in OBSERVED.items():
            owner = getattr(importlib.import_module(module), cls)
            if inspect.getattr_static(owner, name, None) is not None:
                patches.append(Patch(owner, name, self._make(surface), "driftcheck.readers.live"))
        self.patches = apply_all(patches)

    def remove(self) -> None:
        restore_all(self.patches)
        self.patches = []

    def _make(self, surface: str):
        def make(original):
            def observed(*args, **kwargs):
                result = original(*args, **kwargs)
                self.hits[surface] = self.hits.get(surface, 0) + 1
                self.returns.setdefault(surface, set()).add(_arity(result))
                if surface == "runner.prepare_inputs":
                    self._see_batch(args[0])
                if self.report_dir:
                    self._report()
                return result

            return observed

        return make

    def _see_batch(self, runner) -> None:
        batch = getattr(runner, "input_batch", None)
        if batch is None:
            return
        self.missing_fields.update(f for f in ESAMP_INPUT_BATCH_FIELDS if not hasattr(batch, f))
        self.runner_ids.update(r for r in getattr(batch, "req_ids", []) if r)

    def _report(self) -> None:
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
    report_dir = os.environ.get(env.LIVE_DIR)
    if not report_dir or os.environ.get(env.LIVE_PID) == str(os.getpid()):
        return
    Observers(report_dir).install()


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


def observe_engine() -> dict:
    """Run the tiny model with the observers on, here and in any process vLLM starts."""
    from vllm import LLM, SamplingParams

    from driftcheck.models.engine_env import tiny_engine_kwargs
    from driftcheck.models.tiny import ensure_tiny_model

    report_dir = tempfile.mkdtemp(prefix="driftcheck-live-")
    os.environ[env.LIVE_DIR], os.environ[env.LIVE_PID] = report_dir, str(os.getpid())
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


def engine_observations(engine: dict) -> dict[str, SurfaceObservation]:
    """What the running engine showed, as live observations of the surfaces it concerns."""
    out: dict[str, SurfaceObservation] = {}
    for surface, shapes in engine["returns"].items():
        obs = out.setdefault(surface, SurfaceObservation(surface, "live", True))
        obs.aspects["return_arity"] = ", ".join(shapes)
    ids = engine["request_ids"]
    if engine["hits"].get("runner.prepare_inputs"):
        out["engine.request_ids"] = SurfaceObservation("engine.request_ids", "live", True,
                                                       aspects={"request_ids": RequestIds(ids["behaviour"])},
                                                       detail={"example": ids["example"]})
        present = tuple(f for f in ESAMP_INPUT_BATCH_FIELDS if f not in engine["missing_fields"])
        out["input_batch.fields"] = SurfaceObservation("input_batch.fields", "live", True,
                                                       aspects={"fields": NameList(present)})
    return out


def read_live() -> dict:
    """Everything the live reader finds: observations (inspect, then the engine) and the engine's facts."""
    import vllm

    t0 = time.perf_counter()
    observations = {sid: obs.to_json() for sid, obs in inspect_surfaces().items()}
    import_seconds = round(time.perf_counter() - t0, 1)
    engine = observe_engine()
    for sid, obs in engine_observations(engine).items():
        merged = observations.get(sid)
        if merged is None:
            observations[sid] = obs.to_json()
        else:
            merged["aspects"].update(obs.to_json()["aspects"])
            merged["detail"].update(obs.detail)
    return {
        "vllm_version": getattr(vllm, "__version__", None),
        "import_seconds": import_seconds,
        "observations": observations,
        **engine,
        "summary": {"engine_steps": engine["steps"], "request_ids": engine["request_ids"]["behaviour"],
                    "hits": engine["hits"]},
    }


def _child_main() -> None:
    try:
        import vllm  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure is the finding
        print(f"cannot import vllm: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(4)
    print("DRIFTCHECK_LIVE " + json.dumps(read_live(), sort_keys=True))


if __name__ == "__main__":
    _child_main()
