"""One benchmark worker: a warm engine in its own process (`python -m driftcheck.bench.worker OPTS`).

`vanilla` binds nothing; `esamp` does `import esamp.runtime` and enables ESamp at β on every
request. The worker warms up every batch shape the timed rounds will see, says it is ready,
then answers commands on stdin (round | profile | host_profile | filter_replay | stats | quit), one JSON line each, on the
original stdout; everything vLLM prints goes to stderr.
"""

from __future__ import annotations

import functools
import gc
import json
import os
import sys
import threading
import time

from driftcheck import env
from driftcheck.bench.profile import filter_replay, host_profile_round, profile_round
from driftcheck.bench.shapes import BETA, SAMPLINGS, engine_kwargs, prompts_and_limits, shape_logits
from driftcheck.models.engine_env import tensor_parallel_kwargs

PROFILE_TOKENS = 64  # decoding steps of a profiled round
REPLAY_SAMPLES = 8  # filter inputs kept from a round for filter_replay, spread over its steps


def _worker(opts: dict) -> None:
    # The protocol goes to the original stdout; everything vLLM prints goes to stderr.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    os.environ[env.VLLM_MULTIPROCESSING] = "0"
    if opts["device"] == "cpu":
        from driftcheck.models.engine_env import use_cpu_engine_env

        use_cpu_engine_env()
    else:
        os.environ.setdefault("VLLM_USE_DEEP_GEMM", "0")
        _pin()
    esamp = opts["variant"] == "esamp"
    if esamp:
        import esamp.runtime  # noqa: F401 - binds the shims in this (engine) process
    import torch
    from vllm import LLM, SamplingParams

    if opts["device"] == "cpu":
        torch.set_num_threads(1)
    extra = {"additional_config": {"esamp": {**opts.get("esamp_config", {}), "enable": True}}} if esamp else {}
    # tensor parallel: the model runs in tp worker processes, ESamp in each of them
    extra.update(tensor_parallel_kwargs(int(opts.get("tp", 1)), opts["device"]))
    t0 = time.perf_counter()
    llm = LLM(model=opts["model_dir"], **engine_kwargs(opts["device"], opts["mode"], opts.get("shape", "")), **extra)
    load_s = time.perf_counter() - t0
    # the same weights in both workers: in place, before any timed round (CUDA graphs read the same memory)
    # a partial of a module-level function, not a lambda: under tensor parallelism it is pickled to each worker
    shaped = llm.apply_model(functools.partial(shape_logits, logits=opts.get("logits", "flat")))[0]
    work = opts["workload"]
    prompts, limits = prompts_and_limits(opts.get("shape", ""), work)

    def params(sampling: str, max_tokens: int | None = None):
        lim = {**limits, "max_tokens": max_tokens} if max_tokens else limits
        return SamplingParams(n=work["n"], detokenize=False, **lim,
                              extra_args={"esamp_beta": opts.get("beta", BETA)} if esamp else None, **SAMPLINGS[sampling])

    def generate(sampling: str, max_tokens: int | None = None) -> tuple[int, float]:
        # no cyclic-garbage collection inside a timed generate (both variants alike): a full collection
        # over vLLM's and torch's heap lands at random in a round of a host-bound engine
        gc.collect()
        gc.disable()
        try:
            t = time.perf_counter()
            outs = llm.generate(prompts, params(sampling, max_tokens), use_tqdm=False)
            return sum(len(c.token_ids) for o in outs for c in o.outputs), time.perf_counter() - t
        finally:
            gc.enable()

    for sampling in [opts["samplings"][0], *opts["samplings"]]:  # warm-up: every batch shape the rounds see
        generate(sampling)  # (the first setting twice: ESamp's first round ran ~30 % slow, allocating)
    gc.collect()
    gc.freeze()  # what the warm engine holds is never scanned again
    pinned = _pin_main_thread() if opts["device"] != "cpu" else None
    clocks = GpuClocks(opts["device"] == "cuda")
    proto.write(json.dumps({"ready": True, "load_s": load_s, "vllm": _vllm_version(), "shaped": shaped,
                            "torch": torch.__version__, "main_thread_core": pinned,
                            "main_core_siblings": sorted(siblings(pinned)) if pinned is not None else None,
                            "rest_cores": sorted(REST_CORES)}) + "\n")
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "round":
            (cpu0, switches0), steal0, threads0 = _usage(), _steal_seconds(), thread_cpu()
            core0 = core_seconds(pinned)
            with clocks:
                tokens, seconds = generate(cmd["sampling"])
            cpu1, switches1 = _usage()
            threads = thread_cpu_delta(threads0, thread_cpu())
            # what else the round's time went to: this process's CPU time, and the time the hypervisor
            # gave this machine's cores to someone else (a round that is slow with high steal is noise)
            proto.write(json.dumps({"tokens": tokens, "seconds": seconds, "tok_s": tokens / seconds,
                                    "cpu_s": cpu1 - cpu0,
                                    # the engine's threads taken off a core for another (contention)
                                    "involuntary_switches": switches1 - switches0,
                                    **clocks.summary(),
                                    "steal_s": (_steal_seconds() - steal0) if steal0 is not None else None,
                                    # which of the process's threads the CPU time went to
                                    "threads_cpu_s": threads,
                                    # the engine thread's own core, by kind of time
                                    "main_core_s": core_delta(core0, core_seconds(pinned))}) + "\n")
        elif cmd["op"] == "profile":
            from driftcheck.shims import hook_points

            # the named ranges of the shims and of ESamp (only the ESamp worker binds them)
            set_ranges = (lambda on: setattr(hook_points, "RANGES", on)) if esamp else None
            # a shorter round (PROFILE_TOKENS steps of the same batch): the trace of a full one is ~10^5 events
            short = min(work["max_tokens"], PROFILE_TOKENS)
            profiled = profile_round(lambda: generate(cmd["sampling"], short), set_ranges)
            proto.write(json.dumps({"profile": profiled}) + "\n")
        elif cmd["op"] == "host_profile":  # the same short round under cProfile
            short = min(work["max_tokens"], PROFILE_TOKENS)
            proto.write(json.dumps({"host_profile": host_profile_round(lambda: generate(cmd["sampling"], short))}) + "\n")
        elif cmd["op"] == "filter_replay":
            # odd: the kept calls alternate between even and odd steps (at 7B with min_p, ESamp's even calls ran
            # 3.10 ms against 1.97 for its odd ones, and every 32nd call kept only odd ones: 37a127f's row);
            # REPLAY_SAMPLES + 1 parts: all of them fit in the round
            every = max(1, work["max_tokens"] // (REPLAY_SAMPLES + 1)) | 1
            replay = filter_replay(lambda: generate(cmd["sampling"]), every, REPLAY_SAMPLES)
            proto.write(json.dumps({"filter_replay": replay}) + "\n")
        elif cmd["op"] == "stats":
            stats = {}
            if esamp:  # from every process that runs the model: this one, or each tensor-parallel worker
                ranks = sorted(llm.collective_rpc(rank_stats, kwargs={"reset": bool(cmd.get("reset"))}),
                               key=lambda r: r.get("rank", 0))
                stats = {**ranks[0], "ranks": ranks}
            proto.write(json.dumps({"esamp": stats}) + "\n")
        else:
            break


def rank_stats(_worker=None, reset: bool = False) -> dict:
    """ESamp's counters in the process where it runs (vLLM's collective_rpc calls this in every worker
    that holds the model), with the model runner it built and its rank; `reset`: the next sampling
    setting's candidates are counted afresh."""
    from esamp.controller import CONTROLLER

    from driftcheck.shims.hook_points import HOOKS, rank_info

    stats = CONTROLLER.stats() if CONTROLLER is not None else {}
    # the shims' own host time (their prepare view) beside ESamp's: together, what the hooks cost the host
    stats.update(runner=HOOKS.runner_built, hooks_host_s=dict(HOOKS.counters.host_s), **rank_info())  # runner: v1 | v2
    if reset:
        HOOKS.counters.host_s.clear()
        if CONTROLLER is not None:
            CONTROLLER.reset_counts()
    return stats


def _pin() -> None:
    """A host-bound engine's rounds move with the scheduler's choice of cores: on a machine with cores to
    spare, both workers get the same half of them (only one engine runs at a time, so they never compete,
    and a core slower than another cannot favour one variant: measured on the H200 machine, a vanilla
    worker's rounds moved 30 % with no change but the time)."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cores) >= 8:
        os.sched_setaffinity(0, cores[:len(cores) // 2])


REST_CORES: set[int] = set()  # the worker's cores but the engine thread's (_pin_main_thread)


def _pin_main_thread() -> int | None:
    """After the warm-up: the engine's own thread (this one: the in-process engine steps here) alone on
    the first core of the worker's half, every other thread of the process on the rest of it. Both workers
    use the same core, one at a time. A host-bound engine's round then does not move with which core the
    scheduler picks, or with its own helper threads sharing that core. (Measured at 0.5B on the H200
    machine, it did not narrow the vanilla rounds' spread: 19-45 % with the process-wide pin alone, 12-45 %
    with this too, with 1-9 involuntary switches a round and the SM clock at 1980 MHz throughout: the
    host's own speed moved.) Threads started later by this one (the clock sampler) move to the rest
    themselves (REST_CORES). Returns the core, or None where there are too few cores to set one apart."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 4:
        return None
    main, rest = cores[0], set(cores[1:])
    # the other hardware threads of the engine thread's physical core are left idle where the rest can spare
    # them: a helper thread spinning there (vLLM's output thread waits on each step's copy) shares the core's
    # pipelines with the engine thread, so its speed would move with where the scheduler put the helper.
    # (The H200 machine shows none: one thread per core. There, at 88bb130, the slow 0.5B rounds' engine core
    # spent all its time in user mode, with no irq, softirq or steal time: the same work ran ~1.5x slower on
    # the host's side of the VM, in both variants.)
    idle = siblings(main) & rest
    if len(rest - idle) >= 2:
        rest -= idle
    REST_CORES.update(rest)
    me = threading.get_native_id()
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), {main} if int(tid) == me else rest)
        except OSError:  # a thread that ended meanwhile
            pass
    return main


def siblings(core: int, root: str = "/sys/devices/system/cpu") -> set[int]:
    """The other hardware threads of `core`'s physical core (sysfs thread_siblings_list, e.g. "0,8" or "0-1");
    empty where the machine does not say."""
    try:
        with open(f"{root}/cpu{core}/topology/thread_siblings_list") as f:
            text = f.read().strip()
        out = set()
        for part in filter(None, text.split(",")):
            low, _, high = part.partition("-")
            out.update(range(int(low), int(high or low) + 1))
    except (OSError, ValueError):
        return set()
    return out - {core}


CORE_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def cpu_seconds(label: str) -> dict[str, float] | None:
    """The time so far by kind of one /proc/stat line (`cpu`: the whole machine, `cpuN`: core N), or None."""
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith(f"{label} "):
                    values = [int(v) for v in line.split()[1:1 + len(CORE_FIELDS)]]
                    tick = os.sysconf("SC_CLK_TCK")
                    return {k: v / tick for k, v in zip(CORE_FIELDS, values)}
    except (OSError, ValueError):
        return None
    return None


def core_seconds(core: int | None) -> dict[str, float] | None:
    """One core's time so far by kind (user, system, irq, softirq, steal, ...), or None: whether a slow round's
    engine core went to interrupts or to the hypervisor rather than to the engine."""
    return None if core is None else cpu_seconds(f"cpu{core}")


def core_delta(before: dict | None, after: dict | None) -> dict[str, float] | None:
    """`core_seconds` spent between two readings, the kinds with any time (10 ms ticks)."""
    if before is None or after is None:
        return None
    return {k: round(after[k] - before[k], 2) for k in CORE_FIELDS if after[k] - before[k] > 0}


class GpuClocks:
    """The GPU's SM clock during a round (`with clocks:`), sampled every PERIOD s in a thread through NVML
    (vLLM's own binding, vllm.third_party.pynvml), with the clock-limiting reasons NVML gave meanwhile
    (a bit mask, OR-ed): whether a round was slow because the GPU ran slower. Nothing where NVML is not
    there (the CPU, or a release without the binding)."""

    PERIOD = 0.05

    def __init__(self, on: bool) -> None:
        self.nvml = self.handle = None
        if on:
            try:
                import torch
                from vllm.third_party import pynvml

                index = _nvml_index(torch.cuda.current_device())
                if index is not None:
                    pynvml.nvmlInit()
                    self.nvml, self.handle = pynvml, pynvml.nvmlDeviceGetHandleByIndex(index)
            except Exception:  # no NVML here: the rounds carry no clocks
                self.nvml = None
        self.samples: list[int] = []
        self.reasons = 0
        self._stop = threading.Event()
        self._thread = None

    def _sample(self) -> None:
        if REST_CORES:  # started by the pinned engine thread: off its core
            try:
                os.sched_setaffinity(0, REST_CORES)
            except OSError:  # the cores changed under the worker: sample from where it is
                pass
        while not self._stop.wait(self.PERIOD):
            try:
                self.samples.append(self.nvml.nvmlDeviceGetClockInfo(self.handle, self.nvml.NVML_CLOCK_SM))
                self.reasons |= self.nvml.nvmlDeviceGetCurrentClocksThrottleReasons(self.handle)
            except Exception:
                return

    def __enter__(self):
        self.samples, self.reasons = [], 0
        if self.nvml is not None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._sample, name="gpu-clocks", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def summary(self) -> dict:
        if not self.samples:
            return {}
        return {"sm_mhz": sum(self.samples) / len(self.samples), "sm_mhz_min": min(self.samples),
                "sm_mhz_max": max(self.samples), "clock_reasons": self.reasons}


def _nvml_index(cuda_index: int) -> int | None:
    """NVML's index of CUDA device `cuda_index`: NVML counts every GPU of the machine, CUDA only the visible
    ones, in CUDA_VISIBLE_DEVICES order. None where that names devices by UUID (the clock is then not read,
    rather than read from another GPU)."""
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if not visible:
        return cuda_index
    if cuda_index >= len(visible) or not visible[cuda_index].isdigit():
        return None
    return int(visible[cuda_index])


def _usage() -> tuple[float, int]:
    """This process's CPU seconds so far and its involuntary context switches, from one getrusage."""
    import resource

    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime, use.ru_nivcsw


def thread_cpu() -> dict[int, tuple[str, float]]:
    """{thread id: (name, CPU seconds so far)} for every thread of this process (/proc/self/task; {} where
    there is none). The name is Python's for its threads (`threading`), else the kernel's (`comm`): vLLM's,
    torch's and the CUDA driver's own threads. Clock ticks: 10 ms resolution."""
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return {}
    python_names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
    tick = os.sysconf("SC_CLK_TCK")
    out = {}  # a thread that ends between two readings is in neither: its time is not split out
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:  # a thread that ended meanwhile
            continue
        close = stat.rindex(")")  # the name is in parentheses and may hold spaces or parentheses itself
        fields = stat[close + 2:].split()  # from field 3 (state): utime is field 14, stime 15
        name = python_names.get(int(tid)) or stat[stat.index("(") + 1:close]
        out[int(tid)] = (name, (int(fields[11]) + int(fields[12])) / tick)
    return out


def thread_cpu_delta(before: dict, after: dict, top: int = 6) -> dict[str, float]:
    """The CPU seconds each thread spent between two `thread_cpu` readings, the `top` largest (at least one
    tick), as {"name [tid]": seconds}: a round's CPU time beside the engine's own thread, by thread."""
    spent = [(cpu - before.get(tid, (name, 0.0))[1], f"{name} [{tid}]") for tid, (name, cpu) in after.items()]
    spent = sorted((s for s in spent if s[0] > 0), reverse=True)[:top]
    return {label: round(seconds, 3) for seconds, label in spent}


def _steal_seconds() -> float | None:
    """CPU time stolen by the hypervisor, summed over the machine's cores (/proc/stat), or None."""
    times = cpu_seconds("cpu")
    return times.get("steal") if times is not None else None


def _vllm_version() -> str:
    import vllm

    return getattr(vllm, "__version__", "?")


if __name__ == "__main__":
    _worker(json.loads(sys.argv[1]))
