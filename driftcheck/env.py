"""Every environment variable driftcheck reads or sets, in one place.

Environment variables are how settings reach vLLM's engine-core and worker
processes (they inherit the environment of the process that started them).
Code elsewhere names these constants, never the strings.
"""

from __future__ import annotations

import os
from pathlib import Path

#: "1": the vllm.general_plugins entry point binds the shims in this process (set by `import esamp.runtime`)
SHIMS = "DRIFTCHECK_SHIMS"
#: the shim plan the parent computed, as JSON (shims/plan.py ShimPlan.to_json); engine processes bind it as is
PLAN = "DRIFTCHECK_PLAN"
#: "0,-1" (default): the shallow and deep tap layers
TAP_LAYERS = "DRIFTCHECK_TAP_LAYERS"
#: a directory: every process writes its hook counters there each step (stats-<pid>.json)
STATS_DIR = "DRIFTCHECK_STATS_DIR"
#: "1": warn instead of refusing when a hook ESamp needs has no shim
ALLOW_UNBOUND = "DRIFTCHECK_ALLOW_UNBOUND"
#: directories of generated shims (`driftcheck propose`), os.pathsep-separated
SHIM_PATH = "DRIFTCHECK_SHIM_PATH"
#: "1": attach the recording probe where the model runs; "stress": the stress checks too
PROBES = "DRIFTCHECK_PROBES"
#: where the stress checks save tapped rows for the parent's reference comparison
STRESS_DIR = "DRIFTCHECK_STRESS_DIR"
#: the probes' own tests: the name of a known bug to reintroduce (probes/faults.py), read by the plugin only
FAULT = "DRIFTCHECK_FAULT"
#: `driftcheck scan --live`: where observers in other processes report, and the live child's pid
LIVE_DIR = "DRIFTCHECK_LIVE_DIR"
LIVE_PID = "DRIFTCHECK_LIVE_PID"
#: cache root for fetched wheels, built models and compat venvs (default ~/.cache/driftcheck)
CACHE = "DRIFTCHECK_CACHE"
#: "1": print tracebacks of failures that are otherwise reported in one line
DEBUG = "DRIFTCHECK_DEBUG"

#: vLLM's own switches that driftcheck sets or reads
VLLM_MULTIPROCESSING = "VLLM_ENABLE_V1_MULTIPROCESSING"
VLLM_USE_V2_MODEL_RUNNER = "VLLM_USE_V2_MODEL_RUNNER"
VLLM_KVCACHE_SPACE = "VLLM_CPU_KVCACHE_SPACE"


def cache_dir() -> Path:
    """driftcheck's cache root: $DRIFTCHECK_CACHE, or ~/.cache/driftcheck."""
    return Path(os.environ.get(CACHE) or Path.home() / ".cache" / "driftcheck").expanduser()
