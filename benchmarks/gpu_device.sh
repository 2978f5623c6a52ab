#!/usr/bin/env bash
# Runs on the GPU device machine, from the repository root, with .gpu-bundle carried
# (built here by benchmarks/gpu_bundle.py). Arguments: SHAPE:MODE ... (driftcheck bench shapes;
# modes eager | graphs), optionally preceded by --rounds N, then --profile. Results: $OUT/gpu.json, logs in $OUT/.
set -u
OUT=${OUT:-/tmp/out}
ROUNDS=3; PROFILE=
if [ "${1:-}" = "--rounds" ]; then ROUNDS=$2; shift 2; fi
if [ "${1:-}" = "--profile" ]; then PROFILE=--profile; shift; fi
mkdir -p "$OUT" /tmp/vl /tmp/site
t0=$(date +%s)
tar xzf .gpu-bundle/vllm-tree.tgz -C /tmp/vl
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu-bundle/wh/*.whl \
  > "$OUT/install.log" 2>&1 || { echo "bundle install failed"; tail -5 "$OUT/install.log"; exit 1; }
export PYTHONPATH=/tmp/vl:/tmp/site:$PWD VLLM_USE_DEEP_GEMM=0
echo "installed in $(( $(date +%s) - t0 )) s; $(nvidia-smi --query-gpu=name --format=csv,noheader)"
status=0
for cfg in "$@"; do
  shape=${cfg%%:*}; mode=${cfg##*:}
  t=$(date +%s)
  python3 -m driftcheck bench throughput --device cuda --shape "$shape" --mode "$mode" --rounds "$ROUNDS" $PROFILE \
    --log-dir "$OUT/logs" --results "$OUT/gpu.json" --out "$OUT/gpu.md" > "$OUT/$shape-$mode.log" 2>&1 || status=1
  echo "== $cfg ($(( $(date +%s) - t )) s)"; tail -4 "$OUT/$shape-$mode.log"
done
exit $status
