"""The benchmark parent: two warm workers (vanilla, esamp), timed rounds alternating A B A B,
so drift in machine state hits both; only one engine runs at a time. The ESamp worker's
counters must prove the intervention and the training ran during the timed rounds: a
benchmark of a silent no-op is refused."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from driftcheck.bench.profile import components, host_summary
from driftcheck.bench.shapes import BETA, DEFAULT_SAMPLINGS, SAMPLINGS, workload, write_model_dir

#: The vanilla rounds of a setting must agree within this (max - min) / median, or its ratio is noise.
VANILLA_SPREAD_LIMIT = 0.10
#: What each round records beside its tokens/s (bench/worker.py): where its time went, and whether the
#: machine changed under it (CPU time stolen, threads switched out, the GPU's SM clock), and the CPU time by
#: thread (at 0.5B on the H200 the fast rounds ran 1.3-1.55 CPU s per s, the slow ones 1.03-1.10, in both variants)
ROUND_DETAIL = ("seconds", "cpu_s", "steal_s", "involuntary_switches", "sm_mhz", "sm_mhz_min", "sm_mhz_max",
                "clock_reasons", "threads_cpu_s", "main_core_s")


class Worker:
    def __init__(self, opts: dict, log_dir: Path) -> None:
        self.name = opts["variant"]
        self.log = open(log_dir / f"{opts['label']}-{self.name}.log", "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "driftcheck.bench.worker", json.dumps(opts)],
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


def bench_label(device: str, shape: str, mode: str, logits: str = "flat", runner: str = "",
                esamp_config: dict | None = None, tp: int = 1, beta: float = BETA) -> str:
    settings = [f"{k}={v}" for k, v in sorted((esamp_config or {}).items())]
    return "-".join([device, shape, *([logits] if logits != "flat" else []), mode, *([runner] if runner else []),
                     *([f"tp{tp}"] if tp > 1 else []), *([f"beta{beta:g}"] if beta != BETA else []), *settings])


def run_benchmark(device: str, shape: str, mode: str, rounds: int, *, profile: bool = False,
                  log_dir: Path | None = None, logits: str = "flat", samplings=DEFAULT_SAMPLINGS,
                  runner: str = "", esamp_config: dict | None = None, tp: int = 1, beta: float = BETA,
                  replay: bool = False) -> dict:
    """`runner`: the model runner the engines are expected to build (v1 | v2; "" = not checked), recorded
    in the label; the ESamp worker's stats say which one ran. `esamp_config`: ESamp settings other than
    the defaults (esamp/config.py), recorded in the label. `tp`: tensor_parallel_size of both engines; ESamp's
    counters then come from every rank, and every rank must have run it, with equal digests. `beta`: the ESamp
    requests' β (0: the distiller trains, nothing is fused: the cost of the hooks and the training).
    `replay`: after the timed rounds, one more round per variant and setting whose filter inputs are then
    timed alone (bench/profile.py filter_replay)."""
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="driftcheck-bench-"))
    label = bench_label(device, shape, mode, logits, runner, esamp_config, tp, beta)
    model_dir = write_model_dir(shape, log_dir / "models")
    work = workload(device, shape)
    base = {"device": device, "mode": mode, "shape": shape, "model_dir": str(model_dir), "workload": work,
            "label": label, "logits": logits, "samplings": list(samplings), "esamp_config": esamp_config or {},
            "tp": tp, "beta": beta}
    workers = []
    try:
        for variant in ("vanilla", "esamp"):  # one after the other: engine start-up profiles memory
            w = Worker({**base, "variant": variant}, log_dir)
            workers.append(w)
            w.info = w.ask()
        vanilla, esamp = workers
        result = {"label": label, "device": device, "shape": shape, "mode": mode, "rounds": rounds,
                  "logits": logits, "esamp_config": esamp_config or {}, "tp": tp, "shaped": vanilla.info.get("shaped"), "workload": work, "beta": beta,
                  "machine": machine(device), "vllm": vanilla.info["vllm"], "torch": vanilla.info["torch"],
                  "load_s": {"vanilla": vanilla.info["load_s"], "esamp": esamp.info["load_s"]},
                  "main_thread_core": vanilla.info.get("main_thread_core"),
                  "main_core_siblings": vanilla.info.get("main_core_siblings"),
                  "rest_cores": vanilla.info.get("rest_cores"), "variants": {}}
        esamp.ask({"op": "stats", "reset": True})  # the warm-up's counts are not a setting's
        for sampling in samplings:
            runs, detail = {"vanilla": [], "esamp": []}, {"vanilla": [], "esamp": []}
            for i in range(rounds):
                order = (vanilla, esamp) if i % 2 == 0 else (esamp, vanilla)
                for w in order:
                    answer = w.ask({"op": "round", "sampling": sampling})
                    runs[w.name].append(answer["tok_s"])
                    detail[w.name].append({k: answer.get(k) for k in ROUND_DETAIL})
            result["variants"][sampling] = {"params": SAMPLINGS[sampling], **summarize(runs), "round_detail": detail,
                                            "esamp_counters": esamp.ask({"op": "stats", "reset": True})["esamp"]}
        result["esamp_counters"] = esamp.ask({"op": "stats"})["esamp"]
        result["runner"] = result["esamp_counters"].get("runner")
        if profile:
            result["profile"] = {w.name: w.ask({"op": "profile", "sampling": samplings[0]})["profile"]
                                 for w in workers}
            result["components"] = {**components(result["profile"]), "sampling": samplings[0]}
            hosts = {w.name: w.ask({"op": "host_profile", "sampling": samplings[0]})["host_profile"] for w in workers}
            result["components"]["host"] = host_summary(hosts)
        if replay:
            result["filter_replay"] = {s: {w.name: w.ask({"op": "filter_replay", "sampling": s})["filter_replay"]
                                           for w in workers} for s in samplings}
        _check_esamp_ran(result)
        return result
    finally:
        for w in workers:
            w.close()


def summarize(runs: dict) -> dict:
    """Ratios per pair of rounds, and whether the vanilla rounds agree well enough for them to mean anything."""
    ratios = [e / v for e, v in zip(runs["esamp"], runs["vanilla"])]
    van = runs["vanilla"]
    spread = (max(van) - min(van)) / statistics.median(van)
    return {"vanilla_tok_s": van, "esamp_tok_s": runs["esamp"],
            "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "ratio_of_medians": statistics.median(runs["esamp"]) / statistics.median(van),
            "vanilla_spread": spread, "noise": spread > VANILLA_SPREAD_LIMIT}


def noisy(result: dict) -> list[str]:
    """The settings whose vanilla rounds spread more than VANILLA_SPREAD_LIMIT: their ratios are noise."""
    return [f"{name} (vanilla spread {v['vanilla_spread']:.0%})" for name, v in result["variants"].items()
            if v.get("noise")]


def _check_esamp_ran(result: dict) -> None:
    from driftcheck.probes.ranks import compare_ranks

    c = result["esamp_counters"]
    fusing = result.get("beta", BETA) != 0  # β = 0: the distiller trains, nothing is fused
    for r in c.get("ranks") or [c]:
        if not r.get("gate_passed") or not r.get("train_steps") or (fusing and not r.get("intervention_calls")):
            raise RuntimeError(f"ESamp did not run in the esamp worker's rank {r.get('rank', 0)} (counters "
                               f"{ {k: r.get(k) for k in ('gate_passed', 'train_steps', 'intervention_calls')} }): "
                               "the figures would be vanilla's")
    tp = result.get("tp", 1)
    if tp > 1:
        problems = compare_ranks([{"rank": r.get("rank", 0), "world_size": r.get("world_size", 1),
                                   "digests": r.get("digests", [])} for r in c.get("ranks", [])], tp, esamp=True)
        if problems:
            raise RuntimeError(f"tensor parallel ESamp: {'; '.join(problems)}")
    for name, v in result["variants"].items():
        if fusing and not v["esamp_counters"].get("rows_counted"):
            raise RuntimeError(f"ESamp intervened on no counted row under {name}: the figures would be vanilla's")


def machine(device: str) -> str:
    if device == "cuda":
        import torch

        return torch.cuda.get_device_name(0)
    return f"{platform.machine()} CPU, {os.cpu_count()} cores"
