"""reports/benchmarks.json (every run, keyed by label) -> reports/benchmarks.md."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from driftcheck.bench.runner import VANILLA_SPREAD_LIMIT
from driftcheck.bench.shapes import BETA, SAMPLINGS
from driftcheck.files import write_atomic


def record(result: dict, json_path: Path, stamp: str | None = None) -> None:
    """Merge one result (keyed by label, or 'scan') into the JSON file. A benchmark's sampling settings
    merge into those already recorded under its label (a setting measured again replaces its row; the
    others stay), each stamped with the code that measured it (`stamp`: the commit, see `code_stamp`);
    so does a profile, which stays until a later run of the label profiles again."""
    data = json.loads(json_path.read_text()) if json_path.exists() else {}
    if stamp:
        for v in result.get("variants", {}).values():
            v.setdefault("measured_with", stamp)
        if result.get("components"):
            result["components"].setdefault("measured_with", stamp)
        for entry in result.get("filter_replay", {}).values():
            entry.setdefault("measured_with", stamp)
    old = data.get(result["label"])
    if old and "variants" in old and "variants" in result:
        merged = {**result, "variants": {**old["variants"], **result["variants"]}}
        if not result.get("components") and old.get("components"):
            merged["components"], merged["profile"] = old["components"], old.get("profile")
        if old.get("filter_replay") or result.get("filter_replay"):
            merged["filter_replay"] = {**old.get("filter_replay", {}), **result.get("filter_replay", {})}
        result = merged
    data[result["label"]] = result
    write_atomic(json_path, json.dumps(data, indent=1, sort_keys=True) + "\n")


def code_stamp(root: Path) -> str | None:
    """The commit (short) of the checkout at `root`, with "+changes" when its tracked files differ from it;
    None outside a git checkout."""
    import subprocess

    cwd = str(root)
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=cwd, capture_output=True, text=True,
                              timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


OLDER = "older"  # rows recorded before they carried the commit that measured them (8c95e39, 2026-12-01, or earlier)
LEGACY_SAMPLINGS = {"min_p=0.0": "t0.8-p0.95", "min_p=0.05": "t0.8-p0.95-minp0.05"}  # results before 2026-12


def _settings(result: dict) -> str:
    """ESamp settings other than the defaults that a row ran with (bench --esamp-setting)."""
    config = result.get("esamp_config") or {}
    tp = f", TP {result['tp']}" if result.get("tp", 1) > 1 else ""
    beta = f", β {result['beta']:g}" if result.get("beta", BETA) != BETA else ""
    return tp + beta + "".join(f", ESamp {k}={v}" for k, v in sorted(config.items()))


def render_markdown(data: dict) -> str:
    lines = ["# Benchmarks", "",
             "Produced by `driftcheck bench` (driftcheck/bench/; GPU rows by "
             "`benchmarks/gpu_bundle.py` + one device call). Do not edit by hand.", "",
             "## Throughput: ESamp vs vanilla vLLM", "",
             "Same engine settings and SamplingParams (n=16, ignore_eos, fixed max_tokens, prefix caching off); "
             f"ESamp at β={BETA} on every request (a row marked β 0: the distiller trains, no logits are fused); two warm engines, timed rounds alternating A B A B. "
             "Ratio = ESamp tok/s / vanilla tok/s, per pair of rounds: median [min–max]; vanilla tok/s: median "
             "(spread = (max − min) / median of its rounds; a setting whose vanilla rounds spread more than "
             f"{VANILLA_SPREAD_LIMIT:.0%} is marked NOISE, its ratio means nothing). Sampling: "
             + "; ".join(f"`{name}` = {', '.join(f'{k} {v}' for k, v in params.items())}"
                         for name, params in SAMPLINGS.items()) + ". "
             "Logits `flat`: vLLM's dummy weights (near-uniform); `peaked`: the same model with its final norm "
             "rescaled (driftcheck/bench/shapes.py `shape_logits`), so a row's candidates are few, as with a trained "
             "LM. Shape `task`: the trained task model (driftcheck/models/task.py) with real weights, its own "
             "held-out prompts, answers ended by its end token. Candidates per row after top-k/top-p/min-p, as "
             "ESamp counted them under that setting: mean (median / p90 / p99 where counted). ESamp host ms/step: the host "
             "time inside the hooks per step of the timed rounds (perf_counter where they run, no profiler; the device "
             "work they queue is not in it; ESamp's sample and post-filter hooks, and the shims' prepare view where "
             "recorded), its share of a vanilla step, and where recorded its parts: prepare / sample hook (of it, the "
             "distiller step's launch) / fuse, and / the deferred update's queueing where defer_update ran (rows before "
             "2026-12-01's sixth session: -). Code: the commit that "
             f"measured the row (+changes: with uncommitted changes; {OLDER}: recorded before rows carried it, by 8c95e39 "
             "or earlier). The distiller step runs on a side stream by default (`side_stream=True`); rows without a "
             "`side_stream` setting ran it so when measured by 07fa488 or earlier (then with its element-wise work in "
             "PyTorch, not Triton) or by ef2c82c or later, and in the sampler's stream order when measured between "
             "(the default then, now `side_stream=False`).", "",
             "| machine | vLLM | runner | shape | logits | mode | sampling | rounds | vanilla tok/s (spread) "
             "| ESamp tok/s | ratio | candidates/row | ESamp host ms/step | code |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    skipped = []
    for label, r in sorted(data.items()):
        if label == "scan":
            continue
        if "error" in r:
            skipped.append(f"- `{label}`: could not run: {r['error']}")
            continue
        runner = r.get("runner") or "v1"  # results before 2026-12: V1 (CPU, and vLLM 0.20's CUDA default)
        for variant, v in r["variants"].items():
            counters = v.get("esamp_counters") or r.get("esamp_counters") or {}
            van = v["vanilla_tok_s"]
            spread = v.get("vanilla_spread", (max(van) - min(van)) / statistics.median(van))
            noise = " NOISE" if spread > VANILLA_SPREAD_LIMIT else ""
            lines.append(f"| {r['machine']} | {r['vllm']} | {runner} | {r['shape']} | {r.get('logits', 'flat')} | "
                         f"{r['mode']}{_settings(r)} | {LEGACY_SAMPLINGS.get(variant, variant)} | {len(van)} | "
                         f"{statistics.median(van):,.0f} ({spread:.0%}){noise} | "
                         f"{statistics.median(v['esamp_tok_s']):,.0f} | "
                         f"{v['ratio_median']:.3f} [{v['ratio_min']:.3f}–{v['ratio_max']:.3f}] | "
                         f"{_candidates(counters)} | {host_per_step(v)} | {v.get('measured_with', OLDER)} |")
    if skipped:
        lines += ["", "Configurations that did not run:", ""] + skipped
    profiled = [(label, r) for label, r in sorted(data.items()) if r.get("components")]
    if profiled:
        lines += ["", "## Where ESamp's time goes", "", COMPONENTS_TEXT]
    for label, r in profiled:
        setting = r["components"].get("sampling")  # not recorded before 2026-12-01's fifth session
        lines += ["", f"### `{label}` (code {r['components'].get('measured_with', OLDER)}"
                      f"{f', sampling {setting}' if setting else ''})", "",
                  *component_table(r["components"], r.get("profile"))]
    replays = [(label, r) for label, r in sorted(data.items()) if r.get("filter_replay")]
    if replays:
        lines += ["", "## vLLM's filter alone, on each variant's own inputs", "", REPLAY_TEXT, "",
                  "| run | sampling | vanilla ms/call | ESamp ms/call | ESamp / vanilla | in the round, ms/call, vanilla / "
                  "ESamp | ESamp − vanilla in the round, ms/step (share of vanilla's step): ratio without it | "
                  "alone, slowest / fastest copy, vanilla / ESamp | finite logits/row, vanilla / ESamp | code |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for label, r in replays:
            lines += [replay_row(label, sampling, entry, r.get("variants", {}).get(sampling))
                      for sampling, entry in r["filter_replay"].items()]
    scan = data.get("scan")
    if scan:
        lines += ["", "## Scan", "", f"Installed vLLM {scan['vllm']} on {scan['machine']}.", "",
                  "| what | median s | rounds | goal |", "|---|---|---|---|",
                  f"| static scan (fresh interpreter; torch imported: {scan['static_torch_imported']}) | "
                  f"{scan['static_s']:.3f} | {scan['static_rounds']} | < 1 s, no torch |",
                  f"| `scan --live` (child process imports vLLM and torch) | {scan['live_s']:.1f} | "
                  f"{scan['live_rounds']} | < 60 s |"]
    return "\n".join(lines) + "\n"


COMPONENTS_TEXT = ("One profiled round per worker, the first sampling setting of its run (named in the heading where the profile "
                   "recorded it; torch.profiler; the top operators are in "
                   "reports/benchmarks.json). Host ms: Python and launch time inside the named range, its children included "
                   "(esamp.sample_hook contains esamp.distill, the distiller step: prediction and update); device ms: the span of device time its kernels "
                   "covered (an upper bound where the distiller step ran on a side stream, its update beside the next forward); device idle "
                   "inside: from the round's timeline, the time no kernel ran on any stream while the host was inside the range, i.e. "
                   "host work the device waited for (hooks.prepare: the shim's prepare view, before the forward is launched). "
                   "Round totals: wall time, the sum of every kernel's device time, and the timeline's device idle and busy "
                   "time (busy: the union of all streams' kernels); wall ≈ busy + idle; and the device's idle time charged to "
                   "the innermost host event running meanwhile (the largest six); and the operators and kernels whose self device time "
                   "grew most from vanilla's round to ESamp's (the largest five, from each round's top operators: ESamp's own "
                   "work, and any of vLLM's that ran longer). Where recorded (from 2026-12-02), one more round of the same "
                   "steps per worker under cProfile (every Python function and call into C timed; its overhead inflates "
                   "Python-heavy code, so the two variants compare with each other only): the functions whose self host time "
                   "grew most (ESamp's calls, its ms, vanilla's ms; the collection before the round left out), and ESamp's "
                   "functions by cumulative host ms (the largest ten each; all, the shims' too, in reports/benchmarks.json).")


REPLAY_TEXT = ("After a run's timed rounds, one more round per variant and sampling setting in which every "
               "n-th input of vLLM's top-k/top-p filter (V1: `apply_top_k_top_p`, called once per step by both "
               "variants with a top-k or top-p to apply) is copied, up to 8 spread over the round; each is then timed alone (CUDA events, median "
               "of 10, the engine idle; driftcheck/bench/profile.py `filter_replay`). ms/call: median [min–max] "
               "over those inputs. The filter's kernel makes data-dependent passes, so ESamp / vanilla compares "
               "the filter on the logits of the sequences each variant draws, with nothing running beside it "
               "(where the copies' own spread is small: see slowest / fastest copy). In the round: every filter call of that round timed where it ran (CUDA events around it on its "
               "stream): median [min–max]; above the time alone, the call's context (what ran before or beside "
               "it) made it slower, not its inputs; then the median of the kept calls as they ran in the round (every "
               "n-th call: a periodic slowdown off their phase shows here), and, where recorded (from 2026-12-02), the "
               "median of the round's even and odd calls. Slowest / fastest copy: each input alone in 3 copies at different "
               "device addresses, the slowest copy's time over the fastest's (median over the inputs; rows before "
               "2026-12-01's sixth session: -): above 1, where the tensors lie changes the filter's time. "
               "ESamp − vanilla in the round: the mean in-round time of ESamp's filter calls less vanilla's (a step "
               "makes one call), as a share of vanilla's step (rows / its median tokens/s in the timed rounds), and "
               "the timed rounds' median ratio with that time taken out of ESamp's step: 1 / (1/ratio − share). Where "
               "the filter alone on ESamp's inputs is as slow as in its round, that time is vLLM's filter working "
               "harder on the sequences ESamp draws (its passes depend on the logits), not ESamp's own work. Finite logits/row: the entries it got that no earlier step masked (min_p's survivors; the "
               "whole vocabulary where nothing masked).")


def replay_row(label: str, sampling: str, entry: dict, variant: dict | None = None) -> str:
    """One run's and setting's filter_replay line: both variants' filter times and inputs; `variant`: the
    run's timed result for that setting (its ratio and vanilla's tokens/s), for the extra filter time's share."""
    def cell(r: dict | None, key: str, fmt: str) -> str:
        if not r or r.get("error") or not r.get(key):
            return (r or {}).get("error", "-")
        xs = r[key]
        return f"{format(statistics.median(xs), fmt)} [{format(min(xs), fmt)}–{format(max(xs), fmt)}]"

    van, esa = entry.get("vanilla"), entry.get("esamp")
    ratio = "-"
    if van and esa and van.get("ms_median") and esa.get("ms_median"):
        ratio = f"{esa['ms_median'] / van['ms_median']:.3f}"

    def in_round(r: dict | None) -> str:
        if not r or r.get("in_round_ms_median") is None:
            return "-"
        lo, hi = r["in_round_ms_range"]
        text = f"{r['in_round_ms_median']:.3f} [{lo:.3f}–{hi:.3f}]"
        if r.get("in_round_ms_of_samples"):  # the calls whose inputs were kept, as they ran in the round
            text += f", kept calls {statistics.median(r['in_round_ms_of_samples']):.3f}"
        calls = r.get("in_round_ms")  # every call, in order (rows from 2026-12-02)
        if calls and len(calls) > 1:
            text += (f", even / odd calls {statistics.median(calls[0::2]):.3f} / "
                     f"{statistics.median(calls[1::2]):.3f}")
        return text

    def placed(r: dict | None) -> str:
        spreads = [max(x) / min(x) for x in (r or {}).get("ms_by_placement") or [] if min(x) > 0]
        return f"{statistics.median(spreads):.2f}" if spreads else "-"

    finite = f"{cell(van, 'finite_per_row', ',.0f')} / {cell(esa, 'finite_per_row', ',.0f')}"
    return (f"| `{label}` | {LEGACY_SAMPLINGS.get(sampling, sampling)} | {cell(van, 'ms', '.3f')} | "
            f"{cell(esa, 'ms', '.3f')} | {ratio} | {in_round(van)} / {in_round(esa)} | "
            f"{filter_share(entry, variant)} | {placed(van)} / {placed(esa)} | "
            f"{finite} | {entry.get('measured_with', OLDER)} |")


def filter_share(entry: dict, variant: dict | None) -> str:
    """ESamp's extra filter time per step in the round (the mean of its calls less vanilla's), its share of
    vanilla's step (rows per step / vanilla's median tokens/s), and the run's median ratio without it.
    `entry`: a setting's filter_replay; `variant`: the same setting's timed rounds."""
    van, esa = entry.get("vanilla"), entry.get("esamp")
    calls = [(r or {}).get("in_round_ms") for r in (van, esa)]
    if not all(calls) or not variant or not variant.get("vanilla_tok_s") or not van.get("rows"):
        return "-"
    if None not in (variant.get("measured_with"), entry.get("measured_with")) and \
            variant["measured_with"] != entry["measured_with"]:
        return "-"  # the replay and the timed rounds were measured by different code (different runs)
    extra = statistics.mean(calls[1]) - statistics.mean(calls[0])
    step_ms = 1e3 * van["rows"] / statistics.median(variant["vanilla_tok_s"])
    share = extra / step_ms
    ratio = variant["ratio_median"]
    return f"{extra:+.3f} ({100 * share:+.1f} %): {1 / (1 / ratio - share):.3f}"


#: The hooks' host ranges that do not nest (bench host time = their sum; esamp.distill is inside
#: esamp.sample_hook), and the names that rows measured before 334b868 (2026-12-01) gave ESamp's two.
HOST_RANGES = ("hooks.prepare", "esamp.sample_hook", "esamp.fuse", "esamp.sampled")  # sampled: defer_update's flush
LEGACY_HOST = {"sample_hook": "esamp.sample_hook", "fuse": "esamp.fuse"}


def host_per_step(v: dict) -> str:
    """The hooks' host time per step in a setting's timed rounds (perf_counter sums where they run, no
    profiler: the shims' prepare view where recorded, ESamp's sample and post-filter hooks), its share of
    a vanilla step (the vanilla rounds' median seconds over the same steps), and where recorded its parts
    in ms: prepare / sample hook (of it, the distiller step's launch) / fuse (/ the deferred update's queueing,
    where defer_update ran)."""
    c = v.get("esamp_counters") or {}
    steps = c.get("host_steps")
    host = {LEGACY_HOST.get(k, k): x for k, x in {**(c.get("hooks_host_s") or {}), **(c.get("host_s") or {})}.items()}
    if not steps or not any(name in host for name in HOST_RANGES):
        return "-"
    ms = sum(host.get(name, 0.0) for name in HOST_RANGES) / steps * 1e3
    seconds = [d["seconds"] for d in (v.get("round_detail") or {}).get("vanilla", []) if d.get("seconds")]
    text = f"{ms:.3f}"
    if seconds:
        step_ms = statistics.median(seconds) / (steps / len(seconds)) * 1e3
        text += f" ({ms / step_ms:.1%})"
    if "hooks.prepare" in host and "esamp.distill" in host:
        part = {name: host.get(name, 0.0) / steps * 1e3 for name in (*HOST_RANGES, "esamp.distill")}
        text += (f": {part['hooks.prepare']:.3f} / {part['esamp.sample_hook']:.3f} ({part['esamp.distill']:.3f}) / "
                 f"{part['esamp.fuse']:.3f}" + (f" / {part['esamp.sampled']:.3f}" if "esamp.sampled" in host else ""))
    return text


def _candidates(counters: dict) -> str:
    cand, q = counters.get("candidates_per_row"), counters.get("candidates_quantiles") or {}
    text = f"{cand:,.0f}" if cand else "-"
    if q:
        text += f" ({q['median']:,.0f} / {q['p90']:,.0f} / {q['p99']:,.0f})"
    return text


def grown_ops(profile: dict | None, limit: int = 5) -> list[tuple[str, float]]:
    """The operators and kernels whose self device time grew most from vanilla's round to ESamp's
    (ms, largest first; from each worker's top list, so an entry missing from one list counts 0 there):
    ESamp's own work and any of vLLM's that ran longer beside it."""
    if not profile or not all(profile.get(w, {}).get("top") for w in ("vanilla", "esamp")):
        return []
    ms = {w: {t["name"]: t.get("self_device_ms") or 0.0 for t in profile[w]["top"]} for w in ("vanilla", "esamp")}
    grown = [(name, ms["esamp"].get(name, 0.0) - ms["vanilla"].get(name, 0.0)) for name in set(ms["esamp"]) | set(ms["vanilla"])]
    return sorted([g for g in grown if g[1] > 0], key=lambda g: -g[1])[:limit]


def component_table(components: dict, profile: dict | None = None) -> list[str]:
    """One profiled round per worker: the named ranges (host ms inside each, device ms of the kernels
    they launched, and, from the timeline, the device's idle time inside each: host work the device
    waited for), the round's totals, ESamp's against vanilla's, and (from `profile`'s top lists) the
    operators whose device time grew most."""
    tl = components.get("timeline")
    on_device = bool(tl and tl["vanilla"]["busy_ms"] > 0)  # the CPU has no device timeline
    ranges = {name: dict(c) for name, c in components["ranges"].items()}
    for name, t in (tl["esamp"]["ranges"] if tl else {}).items():  # the timeline's host time includes children
        ranges.setdefault(name, {"device_ms": None}).update(calls=t["calls"], host_ms=t["host_ms"])
    rows = ["| component | calls | host ms | device ms | device idle inside, ms |", "|---|---|---|---|---|"]
    for name, c in ranges.items():
        host = "-" if c.get("host_ms") is None else f"{c['host_ms']:.1f}"  # None: not kept by that run's profile
        device = "-" if c.get("device_ms") is None else f"{c['device_ms']:.1f}"
        idle = tl["esamp"]["ranges"].get(name, {}).get("device_idle_ms") if on_device else None
        rows.append(f"| {name} | {c['calls']} | {host} | {device} | {'-' if idle is None else f'{idle:.1f}'} |")
    rows.append(f"| round total, vanilla / ESamp | | {components['wall_ms']['vanilla']:.0f} / "
                f"{components['wall_ms']['esamp']:.0f} (wall) | {components['device_ms']['vanilla']:.0f} / "
                f"{components['device_ms']['esamp']:.0f} (kernel sum) | "
                + (f"{tl['vanilla']['idle_ms']:.0f} / {tl['esamp']['idle_ms']:.0f} (device busy "
                   f"{tl['vanilla']['busy_ms']:.0f} / {tl['esamp']['busy_ms']:.0f}) |" if on_device else "- |"))
    if on_device:
        for worker in ("vanilla", "esamp"):
            top = ", ".join(f"{name} {ms:.1f}" for name, ms in tl[worker].get("idle_by_host_op", [])[:6])
            if top:
                rows.append(f"| device idle by host event, {worker} | | | | {top} |")
    grown = ", ".join(f"{name[:60]} +{ms:.1f}" for name, ms in grown_ops(profile))
    if grown:
        rows.append(f"| device ms grown most, ESamp − vanilla (by operator) | | | {grown} | |")
    host = components.get("host")
    if host:  # the cProfile rounds (bench/profile.py host_profile_round), not the torch.profiler ones
        rows.append(f"| host-profiled round (cProfile), vanilla / ESamp | | {host['wall_ms']['vanilla']:.0f} / "
                    f"{host['wall_ms']['esamp']:.0f} (wall) | | |")
        # the collection before each round (bench/worker.py generate) is not a step's work
        grown = [g for g in host["grown"] if "gc.collect" not in g[0]]
        grown_host = ", ".join(f"{name} ×{calls} {mine:.1f} (vanilla {base:.1f})"
                               for name, calls, mine, base in grown[:HOST_ROWS])
        rows.append(f"| host self ms grown most, ESamp − vanilla (by function) | | {grown_host} | | |")
        # the shims' wrappers' cumulative time holds the vLLM function each wraps: their own cost is self time
        own = [r for r in host["own"] if not r[0].startswith(("shims/", "driftcheck/shims/"))]
        own_host = ", ".join(f"{name} ×{calls} {cum:.1f}" for name, calls, _, cum in own[:HOST_ROWS])
        rows.append(f"| ESamp's functions, cumulative host ms | | {own_host} | | |")
    return rows


HOST_ROWS = 10  # functions named per host-profile row (all kept: reports/benchmarks.json)
