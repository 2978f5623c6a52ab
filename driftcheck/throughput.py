"""Throughput: ESamp against vanilla vLLM, same engine settings, same SamplingParams.

Two worker processes, one engine each, both warm before anything is timed:
`vanilla` (no shims at all) and `esamp` (`import esamp.runtime`, ESamp enabled,
β on every request). The parent alternates timed rounds between them, A B A B,
so drift in machine state hits both; only one engine runs at a time. Each
worker also reports what it did (the ESamp counters prove the intervention and
the training ran during the timed rounds: a benchmark of a silent no-op would
be worthless). Results go to reports/benchmarks.json; reports/benchmarks.md is
rendered from it (`render_markdown`).

Models are config-only directories with `load_format="dummy"` weights and token-id
prompts, so the same code runs here on the CPU and on the GPU device machine,
where there is no model hub and no tokenizer.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: Model shapes (config.json only; dummy weights). "cpu-mid": big enough that the forward
#: dominates on the CPU, as it does on a GPU.
SHAPES = {
    "cpu-mid": {"hidden_size": 1024, "intermediate_size": 2816, "num_hidden_layers": 8,
                "num_attention_heads": 16, "num_key_value_heads": 4, "vocab_size": 32000},
    "qwen2.5-0.5b": {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
                     "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936},
    "qwen2.5-7b": {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                   "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064},
}

#: Workloads per device: the GPU one is the device recipe's baseline (16 prompts x n=16 x 128).
WORKLOADS = {
    "cpu": {"prompts": 4, "prompt_len": 32, "n": 16, "max_tokens": 32},
    "cuda": {"prompts": 16, "prompt_len": 32, "n": 16, "max_tokens": 128},
}
SAMPLING = {"temperature": 0.8, "top_p": 0.95}
MIN_P_VARIANTS = (0.0, 0.05)  # without and with min_p
BETA = 0.8


def write_model_dir(shape: str, root: Path) -> Path:
    """A Qwen2 config.json of the named shape (weights come from load_format="dummy")."""
    cfg = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu",
           "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
           "tie_word_embeddings": shape == "qwen2.5-0.5b", "torch_dtype": "bfloat16",
           "bos_token_id": 0, "eos_token_id": 1, "use_sliding_window": False, **SHAPES[shape]}
    out = root / shape
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    return out


def engine_kwargs(device: str, mode: str) -> dict:
    """vLLM engine settings per device and mode (eager | graphs); shared by both workers."""
    common = {"load_format": "dummy", "skip_tokenizer_init": True, "seed": 0, "enable_prefix_caching": False,
              "max_model_len": 1024}
    if device == "cpu":
        return {**common, "dtype": "float32", "enforce_eager": mode == "eager", "max_num_seqs": 64}
    # The device recipe (../shared/gpu/README.md): Python-only vLLM, Triton attention,
    # no custom ops; "graphs" = full CUDA graphs for decode, without torch.compile.
    compilation = {"custom_ops": ["none"]}
    if mode == "graphs":
        compilation.update({"mode": 0, "cudagraph_mode": "FULL_DECODE_ONLY"})
    return {**common, "dtype": "bfloat16", "enforce_eager": mode == "eager", "gpu_memory_utilization": 0.4,
            "attention_backend": "TRITON_ATTN", "kernel_config": {"ir_op_priority": {"rms_norm": ["native"]}},
            "compilation_config": compilation}


# ---------------------------------------------------------------- worker (one engine)

def _worker(opts: dict) -> None:
    # The protocol goes to the original stdout; everything vLLM prints goes to stderr.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    if opts["device"] == "cpu":
        from driftcheck.tiny_model import use_cpu_engine_env

        use_cpu_engine_env()
    else:
        os.environ.setdefault("VLLM_USE_DEEP_GEMM", "0")
    esamp = opts["variant"] == "esamp"
    if esamp:
        import esamp.runtime  # noqa: F401 - binds the shims in this (engine) process
    import torch
    from vllm import LLM, SamplingParams

    if opts["device"] == "cpu":
        torch.set_num_threads(1)
    extra = {"additional_config": {"esamp": {"enable": True}}} if esamp else {}
    t0 = time.perf_counter()
    llm = LLM(model=opts["model_dir"], **engine_kwargs(opts["device"], opts["mode"]), **extra)
    load_s = time.perf_counter() - t0
    work = opts["workload"]
    prompts = [{"prompt_token_ids": [(100 + 7 * i + j) % 30000 + 2 for j in range(work["prompt_len"])]}
               for i in range(work["prompts"])]

    def params(min_p: float, max_tokens: int):
        return SamplingParams(n=work["n"], min_p=min_p, max_tokens=max_tokens, ignore_eos=True, detokenize=False,
                              extra_args={"esamp_beta": BETA} if esamp else None, **SAMPLING)

    def generate(min_p: float, max_tokens: int) -> tuple[int, float]:
        t = time.perf_counter()
        outs = llm.generate(prompts, params(min_p, max_tokens), use_tqdm=False)
        return sum(len(c.token_ids) for o in outs for c in o.outputs), time.perf_counter() - t

    for min_p in MIN_P_VARIANTS:  # warm-up: every shape of batch the timed rounds will see
        generate(min_p, work["max_tokens"])
    proto.write(json.dumps({"ready": True, "load_s": load_s, "vllm": _vllm_version(),
                            "torch": torch.__version__}) + "\n")
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "round":
            tokens, seconds = generate(cmd["min_p"], work["max_tokens"])
            proto.write(json.dumps({"tokens": tokens, "seconds": seconds, "tok_s": tokens / seconds}) + "\n")
        elif cmd["op"] == "profile":
            proto.write(json.dumps({"profile": _profile(lambda: generate(cmd["min_p"], work["max_tokens"]))}) + "\n")
        elif cmd["op"] == "stats":
            stats = {}
            if esamp:
                from esamp.controller import CONTROLLER

                stats = CONTROLLER.stats() if CONTROLLER is not None else {}
            proto.write(json.dumps({"esamp": stats}) + "\n")
        else:
            break


def _profile(fn) -> list[dict]:
    """Where one round's time goes: the top operators by self time, host and device."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        fn()
    rows = []
    for e in prof.key_averages():
        device_us = getattr(e, "self_device_time_total", 0) or getattr(e, "self_cuda_time_total", 0)
        rows.append({"name": e.key, "calls": e.count, "self_cpu_ms": e.self_cpu_time_total / 1e3,
                     "self_device_ms": device_us / 1e3})
    rows.sort(key=lambda r: -(r["self_device_ms"] or r["self_cpu_ms"]))
    return rows[:25]


def _vllm_version() -> str:
    import vllm

    return getattr(vllm, "__version__", "?")


# ---------------------------------------------------------------- parent (alternating rounds)

class Worker:
    def __init__(self, opts: dict, log_dir: Path) -> None:
        self.name = opts["variant"]
        self.log = open(log_dir / f"{opts['label']}-{self.name}.log", "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "driftcheck.throughput", "--worker", json.dumps(opts)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     bufsize=1)

    def ask(self, cmd: dict | None = None) -> dict:
        if cmd is not None:
            self.proc.stdin.write(json.dumps(cmd) + "\n")
            self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            self.log.flush()
            tail = [x for x in Path(self.log.name).read_text(errors="replace").splitlines() if x.strip()][-1:]
            raise RuntimeError(f"{self.name} worker exited ({self.proc.returncode}): {' '.join(tail)[-400:]} "
                               f"(log {self.log.name})")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
        self.log.close()


def run_benchmark(device: str, shape: str, mode: str, rounds: int, *, profile: bool = False,
                  log_dir: Path | None = None) -> dict:
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="driftcheck-bench-"))
    label = f"{device}-{shape}-{mode}"
    model_dir = write_model_dir(shape, log_dir / "models")
    base = {"device": device, "mode": mode, "model_dir": str(model_dir), "workload": WORKLOADS[device],
            "label": label}
    workers = []
    try:
        for variant in ("vanilla", "esamp"):  # one after the other: engine start-up profiles memory
            w = Worker({**base, "variant": variant}, log_dir)
            workers.append(w)
            w.info = w.ask()
        vanilla, esamp = workers
        result = {"label": label, "device": device, "shape": shape, "mode": mode, "rounds": rounds,
                  "workload": WORKLOADS[device], "sampling": SAMPLING, "beta": BETA, "machine": _machine(device),
                  "vllm": vanilla.info["vllm"], "torch": vanilla.info["torch"],
                  "load_s": {"vanilla": vanilla.info["load_s"], "esamp": esamp.info["load_s"]}, "variants": {}}
        for min_p in MIN_P_VARIANTS:
            runs = {"vanilla": [], "esamp": []}
            for i in range(rounds):
                order = (vanilla, esamp) if i % 2 == 0 else (esamp, vanilla)
                for w in order:
                    runs[w.name].append(w.ask({"op": "round", "min_p": min_p})["tok_s"])
            ratios = [e / v for e, v in zip(runs["esamp"], runs["vanilla"])]
            result["variants"][f"min_p={min_p}"] = {
                "vanilla_tok_s": runs["vanilla"], "esamp_tok_s": runs["esamp"],
                "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
                "ratio_of_medians": statistics.median(runs["esamp"]) / statistics.median(runs["vanilla"])}
        result["esamp_counters"] = esamp.ask({"op": "stats"})["esamp"]
        if profile:
            result["profile"] = {w.name: w.ask({"op": "profile", "min_p": 0.0})["profile"] for w in workers}
        _check_esamp_ran(result)
        return result
    finally:
        for w in workers:
            w.close()


def _check_esamp_ran(result: dict) -> None:
    c = result["esamp_counters"]
    if not c.get("gate_passed") or not c.get("train_steps") or not c.get("intervention_calls"):
        raise RuntimeError(f"ESamp did not run in the esamp worker (counters {c}): the figures would be vanilla's")


def _machine(device: str) -> str:
    if device == "cuda":
        import torch

        return torch.cuda.get_device_name(0)
    return f"{platform.machine()} CPU, {os.cpu_count()} cores"


# ---------------------------------------------------------------- report

def record(result: dict, json_path: Path) -> None:
    """Merge one result (keyed by label, or 'scan') into the JSON file."""
    data = json.loads(json_path.read_text()) if json_path.exists() else {}
    data[result["label"]] = result
    json_path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def render_markdown(data: dict) -> str:
    lines = ["# Benchmarks", "",
             "Produced by `driftcheck bench` (driftcheck/throughput.py; GPU rows by "
             "`benchmarks/gpu_bundle.py` + one device call). Do not edit by hand.", "",
             "## Throughput: ESamp vs vanilla vLLM", "",
             "Same engine settings and SamplingParams (n=16, temperature 0.8, top_p 0.95, ignore_eos, fixed "
             f"max_tokens, prefix caching off); ESamp at β={BETA} on every request; two warm engines, timed rounds "
             "alternating A B A B. Ratio = ESamp tok/s / vanilla tok/s, per pair of rounds: median [min–max].", "",
             "| machine | vLLM | shape | mode | min_p | vanilla tok/s | ESamp tok/s | ratio | candidates/row |",
             "|---|---|---|---|---|---|---|---|---|"]
    skipped = []
    for label, r in sorted(data.items()):
        if label == "scan":
            continue
        if "error" in r:
            skipped.append(f"- `{label}`: could not run: {r['error']}")
            continue
        cand = (r.get("esamp_counters") or {}).get("candidates_per_row")
        cand_text = f"{cand:,.0f}" if cand else "-"
        for variant, v in r["variants"].items():
            lines.append(f"| {r['machine']} | {r['vllm']} | {r['shape']} | {r['mode']} | {variant.split('=')[1]} | "
                         f"{statistics.median(v['vanilla_tok_s']):,.0f} | {statistics.median(v['esamp_tok_s']):,.0f} | "
                         f"{v['ratio_median']:.3f} [{v['ratio_min']:.3f}–{v['ratio_max']:.3f}] | {cand_text} |")
    if skipped:
        lines += ["", "Configurations that did not run:", ""] + skipped
    scan = data.get("scan")
    if scan:
        lines += ["", "## Scan", "", f"Installed vLLM {scan['vllm']} on {scan['machine']}.", "",
                  "| what | median s | rounds | goal |", "|---|---|---|---|",
                  f"| static scan (fresh interpreter; torch imported: {scan['static_torch_imported']}) | "
                  f"{scan['static_s']:.3f} | {scan['static_rounds']} | < 2 s, no torch |",
                  f"| `scan --live` (child process imports vLLM and torch) | {scan['live_s']:.1f} | "
                  f"{scan['live_rounds']} | < 60 s |"]
    return "\n".join(lines) + "\n"


#: A static scan of the installed vLLM timed in a fresh interpreter, imports included (also used by
#: benchmarks/scan_speed.py); prints one JSON line.
STATIC_SCAN_CODE = """
import sys, time, json
t0 = time.perf_counter()
from driftcheck.scan import scan_tree
from driftcheck.source_tree import locate_installed
result = scan_tree(locate_installed())
elapsed = time.perf_counter() - t0
print(json.dumps({"seconds": elapsed, "torch_imported": "torch" in sys.modules,
                  "vllm_imported": "vllm" in sys.modules, "unhandled": len(result.unhandled)}))
"""


def bench_scan(rounds: int) -> dict:
    """Static and live scan timings of the installed vLLM, each in a fresh interpreter."""
    static, live = [], []
    for _ in range(rounds):
        out = subprocess.run([sys.executable, "-c", STATIC_SCAN_CODE], capture_output=True, text=True, check=True)
        static.append(json.loads(out.stdout.strip().splitlines()[-1]))
    for _ in range(rounds):
        t = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "driftcheck", "scan", "--live", "--json"],
                             capture_output=True, text=True)
        live.append(time.perf_counter() - t)
        if out.returncode not in (0, 1):  # 1 = unhandled drift, still a complete scan
            raise RuntimeError(f"scan --live failed ({out.returncode}): {out.stderr.strip()[-300:]}")
    return {"label": "scan", "vllm": _installed_vllm(), "machine": _machine("cpu"),
            "static_s": statistics.median(r["seconds"] for r in static), "static_rounds": rounds,
            "static_torch_imported": any(r["torch_imported"] for r in static),
            "live_s": statistics.median(live), "live_rounds": rounds}


def _installed_vllm() -> str:
    from driftcheck.source_tree import locate_installed

    return locate_installed().version


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        _worker(json.loads(sys.argv[2]))
