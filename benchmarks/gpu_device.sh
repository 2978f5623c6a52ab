#!/usr/bin/env bash
# Runs on the GPU device machine, from the repository root, with .gpu-bundle carried (built here by
# benchmarks/gpu_bundle.py). Installs the bundle, then one job per argument, in order:
#   check:ENV:MODE[:inproc[:TP]]  engine checks on the built-in tiny model (driftcheck/engine_checks.py):
#                     ENV v1 | v2 sets VLLM_USE_V2_MODEL_RUNNER=0|1 and expects that runner;
#                     ENV scan leaves it unset and expects the runner `driftcheck scan` predicts for a
#                     CUDA engine and Qwen2 (the release's default); MODE eager|graphs;
#                     inproc: only the in-process engine (default: in-process and multiprocess; "all" = both);
#                     TP: tensor_parallel_size (every rank judged; needs that many GPUs, e.g. nvidia-h200-x2)
#   SHAPE:MODE[:LOGITS[:RUNNER[:SAMPLINGS[:profile]]]]  the ESamp vs vanilla throughput benchmark (driftcheck bench shapes;
#                     MODE eager|graphs; LOGITS flat|peaked; RUNNER v1|v2 sets VLLM_USE_V2_MODEL_RUNNER=0|1
#                     and requires the engines to build it; left out: the release's default, unchecked;
#                     SAMPLINGS: comma-separated settings for this job, instead of --sampling;
#                     profile: this job also profiles a round, as --profile does for every job)
#   precision:HIDDEN  the distiller alone (driftcheck/bench/precision.py): fp32 vs bf16 loss curves,
#                     the device time of a step, eager and captured, and the default step's time by kernel,
#                     at that hidden size
#   hostcost:HIDDEN   the host µs of each of ESamp's per-step calls alone, no engine (driftcheck/bench/hostcost.py)
#   kernelcost:HIDDEN the device µs of the candidate kernels alone: the collect and the fuse at each tile and
#                     warp count, the whole pass, against a read of the same logits (driftcheck/bench/kernelcost.py)
# Options first: --rounds N (benchmark rounds), --profile, --sampling LIST (bench settings),
# --esamp-setting KEY=VALUE (repeatable; an ESamp setting for the benchmarks, recorded in their label),
# --tp N (the benchmarks' tensor_parallel_size: needs N GPUs, e.g. nvidia-h200-x2; not with --profile),
# --beta B (the ESamp requests' β; 0: the distiller trains, nothing is fused),
# --filter-replay (the benchmarks also time vLLM's filter alone on each variant's inputs: bench --filter-replay),
# --require-kernels (a failed kernel check ends the call at once, instead of benchmarking the PyTorch path),
# --ab KEY=VALUE (every benchmark job runs twice, back to back on the same machine: with the ESamp settings
#   given, then with KEY=VALUE added; each its own row, e.g. --ab side_stream=false: beside vs in order).
# Results under $OUT: gpu.json (benchmarks), check-ENV-MODE.json (checks), precision-HIDDEN.json, hostcost-HIDDEN.md, kernelcost-HIDDEN.md, logs.tgz (the
# workers' logs).
set -u
OUT=${OUT:-/tmp/out}
ROUNDS=5; PROFILE=; SAMPLING=(); SETTINGS=(); TP=1; BETA=(); REPLAY=; REQUIRE=; AB=
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --profile) PROFILE=--profile; shift ;;
    --sampling) SAMPLING=(--sampling "$2"); shift 2 ;;
    --esamp-setting) SETTINGS+=(--esamp-setting "$2"); shift 2 ;;
    --tp) TP=$2; shift 2 ;;
    --beta) BETA=(--beta "$2"); shift 2 ;;
    --filter-replay) REPLAY=--filter-replay; shift ;;
    --require-kernels) REQUIRE=1; shift ;;
    --ab) AB=$2; shift 2 ;;
    *) break ;;
  esac
done
BUNDLE=${BUNDLE:-.gpu-bundle}  # the bundle directory carried (benchmarks/gpu_bundle.py --out)
mkdir -p "$OUT" /tmp/vl /tmp/site
t0=$(date +%s)
python3 -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall('/tmp/vl', filter='data')" "$BUNDLE/vllm-tree.tar.xz"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$BUNDLE"/wh/*.whl \
  > "$OUT/install.log" 2>&1 || { echo "bundle install failed"; tail -5 "$OUT/install.log"; exit 1; }
# no FlashInfer on the Python-only route: V2 (0.27) otherwise imports it for its fused sampler
export PYTHONPATH=/tmp/vl:/tmp/site:$PWD VLLM_USE_DEEP_GEMM=0 VLLM_USE_FLASHINFER_SAMPLER=0 DRIFTCHECK_CACHE=$PWD/$BUNDLE/cache PYTHONUNBUFFERED=1
echo "installed in $(( $(date +%s) - t0 )) s; $(nvidia-smi --query-gpu=name --format=csv,noheader)"
status=0
# the Triton candidate and distiller-step kernels against the PyTorch reference, before anything uses
# them; if they (or the captured distiller steps) disagree with it, the benchmarks measure the PyTorch path
# (ESAMP_TRITON=0) with eager distiller steps (ESAMP_GRAPHS=0) and the call fails
python3 -m driftcheck.probes.kernel_check --device cuda > "$OUT/kernel-check.txt" 2>&1 \
  || { status=1; export ESAMP_TRITON=0 ESAMP_GRAPHS=0; }
grep -E '^(compiles|kernel check)' "$OUT/kernel-check.txt" || tail -1 "$OUT/kernel-check.txt"
if [ "$status" != 0 ] && [ -n "$REQUIRE" ]; then tail -20 "$OUT/kernel-check.txt"; exit 1; fi
for job in "$@"; do
  t=$(date +%s)
  case "$job" in
    check:*)
      IFS=: read -r _ runner mode only tp <<< "$job"
      [ "$only" = all ] && only=
      sfx=${tp:+-tp$tp}
      if [ "$runner" = scan ]; then
        unset VLLM_USE_V2_MODEL_RUNNER
        expect=$(python3 -m driftcheck scan --json 2>"$OUT/scan-$mode.err" | tee "$OUT/scan-$mode.json" | python3 -c \
          "import json,sys; print([r['runner'] for r in json.load(sys.stdin)['runners'] if r['platform'] == 'cuda' and r['architecture'] == 'Qwen2ForCausalLM'][0])") \
          || { echo "== $job: the scan gave no runner verdict"; tail -3 "$OUT/scan-$mode.err"; status=1; continue; }
        echo "scan: a CUDA engine builds $expect for Qwen2"
      else
        expect=$runner; export VLLM_USE_V2_MODEL_RUNNER=0; [ "$runner" = v2 ] && export VLLM_USE_V2_MODEL_RUNNER=1
      fi
      python3 -m driftcheck.engine_checks --device cuda --mode "$mode" \
        ${only:+--inproc-only} --tp "${tp:-1}" --expect-runner "$expect" --out "$OUT/check-$runner-$mode$sfx.json" \
        --imports "$OUT/imports-$runner-$mode$sfx.txt" --log "$OUT/runs-$runner-$mode$sfx.log" \
        > "$OUT/check-$runner-$mode$sfx.log" 2>&1 || status=1
      unset VLLM_USE_V2_MODEL_RUNNER
      echo "== $job ($(( $(date +%s) - t )) s)"
      python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print('ok', r['ok'], 'runner', r.get('runner')); [print(' ', k, c['ok'], c['s'], c['problems'][:2]) for k, c in r['checks'].items()]" "$OUT/check-$runner-$mode$sfx.json" 2>/dev/null || tail -5 "$OUT/check-$runner-$mode$sfx.log"
      ;;
    precision:*)
      hidden=${job#precision:}
      python3 -m driftcheck.bench.precision --device cuda --hidden "$hidden" --json "$OUT/precision-$hidden.json" \
        > "$OUT/precision-$hidden.md" 2> "$OUT/precision-$hidden.err" || { status=1; tail -5 "$OUT/precision-$hidden.err"; }
      echo "== $job ($(( $(date +%s) - t )) s)"; cat "$OUT/precision-$hidden.md" | tail -36
      ;;
    hostcost:*)
      hidden=${job#hostcost:}
      python3 -m driftcheck.bench.hostcost --hidden "$hidden" --json "$OUT/hostcost-$hidden.json" \
        > "$OUT/hostcost-$hidden.md" 2>&1 || status=1
      echo "== $job ($(( $(date +%s) - t )) s)"; cat "$OUT/hostcost-$hidden.md" | tail -16
      ;;
    kernelcost:*)
      hidden=${job#kernelcost:}
      python3 -m driftcheck.bench.kernelcost --hidden "$hidden" --json "$OUT/kernelcost-$hidden.json" \
        > "$OUT/kernelcost-$hidden.md" 2>&1 || status=1
      echo "== $job ($(( $(date +%s) - t )) s)"; cat "$OUT/kernelcost-$hidden.md" | tail -30
      ;;
    *:*)
      IFS=: read -r shape mode logits runner samp prof <<< "$job"
      jobprof=$PROFILE; [ "$prof" = profile ] && jobprof=--profile
      logits=${logits:-flat}
      jobsamp=("${SAMPLING[@]}"); [ -n "$samp" ] && jobsamp=(--sampling "$samp")
      if [ -n "$runner" ]; then export VLLM_USE_V2_MODEL_RUNNER=0; [ "$runner" = v2 ] && export VLLM_USE_V2_MODEL_RUNNER=1; fi
      for extra in "" ${AB:+"$AB"}; do  # --ab: the same job again with that ESamp setting added
        t=$(date +%s)
        log="$OUT/$shape-$mode-$logits${runner:+-$runner}-tp$TP${BETA[1]:+-beta${BETA[1]}}${extra:+-${extra//[^A-Za-z0-9_.]/_}}.log"
        python3 -m driftcheck bench throughput --device cuda --shape "$shape" --mode "$mode" --logits "$logits" \
          ${runner:+--runner "$runner"} --rounds "$ROUNDS" --tp "$TP" $jobprof $REPLAY "${jobsamp[@]}" "${SETTINGS[@]}" \
          ${extra:+--esamp-setting "$extra"} "${BETA[@]}" \
          --log-dir "$OUT/logs" --results "$OUT/gpu.json" --out "$OUT/gpu.md" > "$log" 2>&1 || status=1
        echo "== $job${extra:+ + $extra} ($(( $(date +%s) - t )) s)"; tail -6 "$log"
      done
      unset VLLM_USE_V2_MODEL_RUNNER
      ;;
  esac
done
# the device tool returns at most 8 files: the workers' logs travel as one archive
if [ -d "$OUT/logs" ]; then tar -czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$OUT/logs"; fi
exit $status
