"""Tests for driftcheck.models.tiny and driftcheck.models.engine_env (no vLLM engine here: transformers only)."""

from __future__ import annotations

import copy
import json
import pathlib
import subprocess
import sys
import threading

import pytest

from driftcheck.models import engine_env
from driftcheck.models import tiny as tiny_model
from driftcheck.models.engine_env import cpu_engine_env, tiny_engine_kwargs
from driftcheck.models.tiny import TINY_MODEL_HIDDEN, TINY_MODEL_LAYERS, ensure_tiny_model

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

# NFC text (the Qwen2 tokenizer normalises to NFC), non-ASCII, emoji,
# whitespace runs, code, digits and the special tokens' look-alikes.
ROUND_TRIP_TEXTS = [
    "Hello, world!",
    "héllo wörld — naïve café, São Paulo, Zürich: 你好，世界 🤖🚀 Ωμέγα привет",
    "def f(x):\n\treturn x ** 2  # 3.14159, 1e-6, 0x1F\r\n\n   trailing   ",
    "The year 2024 had 366 days; 12345678901234567890.",
    "\x00\x7f bytes \u200b zero-width",
]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> pathlib.Path:
    return tmp_path_factory.mktemp("driftcheck-cache")


@pytest.fixture(scope="module")
def model_dir(cache_dir) -> pathlib.Path:
    return ensure_tiny_model(cache_dir)


def _recipe(**changes) -> dict:
    recipe = copy.deepcopy(tiny_model._DEFAULT_RECIPE)
    for dotted, value in changes.items():
        node = recipe
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node[key]
        node[leaf] = value
    return recipe


def test_layout(model_dir, cache_dir):
    assert model_dir.parent == cache_dir
    assert model_dir.name.startswith(f"tiny-qwen2-l{TINY_MODEL_LAYERS}-h{TINY_MODEL_HIDDEN}-")
    for name in (
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        tiny_model._MARKER,
    ):
        assert (model_dir / name).is_file(), name
    assert not list(cache_dir.glob(".tmp-*")), "temp build dir left behind"
    assert not list(model_dir.glob("*.bin")), "weights must be safetensors only"


def test_config_values(model_dir):
    from transformers import AutoConfig, AutoTokenizer

    raw = json.loads((model_dir / "config.json").read_text())
    assert raw["model_type"] == "qwen2"
    assert raw["architectures"] == ["Qwen2ForCausalLM"]
    assert raw.get("dtype", raw.get("torch_dtype")) == "float32"

    cfg = AutoConfig.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    assert cfg.hidden_size == TINY_MODEL_HIDDEN == 128
    assert cfg.num_hidden_layers == TINY_MODEL_LAYERS == 4
    assert cfg.num_attention_heads == 4
    assert cfg.num_key_value_heads == 2
    assert cfg.intermediate_size == 256
    assert cfg.max_position_embeddings == 2048
    assert cfg.tie_word_embeddings is False
    assert cfg.vocab_size == len(tok)
    assert 1000 <= cfg.vocab_size <= 2000

    assert tok.eos_token == tiny_model.EOS_TOKEN
    assert cfg.eos_token_id == tok.eos_token_id
    assert cfg.bos_token_id == tok.bos_token_id
    assert cfg.pad_token_id == tok.pad_token_id
    gen = json.loads((model_dir / "generation_config.json").read_text())
    assert gen["eos_token_id"] == tok.eos_token_id


def test_tokenizer_round_trip(model_dir):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    raw = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    for text in ROUND_TRIP_TEXTS:
        ids = tok.encode(text)
        assert ids, text
        assert tok.eos_token_id not in ids, "no BOS/EOS may be added implicitly"
        assert tok.decode(ids) == text
        assert tok.decode(ids).encode("utf-8") == text.encode("utf-8")
        # transformers (which rebuilds the Qwen2 pipeline from vocab + merges)
        # and the raw tokenizer.json must agree, or vLLM and HF could differ.
        assert raw.encode(text).ids == ids
    assert tok.encode(tiny_model.EOS_TOKEN) == [tok.eos_token_id]


def test_chat_template(model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    text = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_forward_finite_logits(model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    assert model.dtype == torch.float32
    ids = tok("The model reads the next token before lunch.", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], model.config.vocab_size)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    assert logits.std() > 0.1  # random but not degenerate


def test_cache_hit_does_not_rebuild(model_dir, cache_dir, monkeypatch):
    stamps = {p.name: p.stat().st_mtime_ns for p in model_dir.iterdir()}

    def boom(*a, **k):
        raise AssertionError("cache hit expected, but the model was rebuilt")

    monkeypatch.setattr(tiny_model, "_write_model", boom)
    assert ensure_tiny_model(cache_dir) == model_dir
    assert ensure_tiny_model(str(cache_dir)) == model_dir
    assert {p.name: p.stat().st_mtime_ns for p in model_dir.iterdir()} == stamps


def test_default_cache_dir_from_env(model_dir, cache_dir, monkeypatch):
    monkeypatch.setenv("DRIFTCHECK_CACHE", str(cache_dir))
    monkeypatch.setattr(tiny_model, "_write_model", lambda *a, **k: pytest.fail("rebuilt"))
    assert ensure_tiny_model() == model_dir
    monkeypatch.delenv("DRIFTCHECK_CACHE")
    monkeypatch.setenv("HOME", str(cache_dir / "home"))
    assert tiny_model._default_cache_dir() == cache_dir / "home" / ".cache" / "driftcheck"


@pytest.mark.parametrize(
    "change",
    [
        {"seed": 1},
        {"version": tiny_model._RECIPE_VERSION + 1},
        {"config__intermediate_size": 512},
        {"config__num_hidden_layers": 2},
        {"tokenizer__vocab_size": 1500},
        {"tokenizer__corpus_seed": 7},
    ],
)
def test_recipe_change_changes_dir_name(change, model_dir):
    name = tiny_model._model_dir_name(_recipe(**change))
    assert name != model_dir.name
    assert tiny_model._model_dir_name(_recipe()) == model_dir.name


def test_changed_recipe_builds_beside_and_build_is_deterministic(model_dir, cache_dir, tmp_path):
    # Same recipe elsewhere: byte-identical artefacts (fixed seed, deterministic BPE).
    again = tiny_model._build(_recipe(), tmp_path / "again")
    assert again.name == model_dir.name
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (again / name).read_bytes() == (model_dir / name).read_bytes(), name

    # Different seed: new directory beside the old one, different weights.
    other = tiny_model._build(_recipe(seed=1), cache_dir)
    assert other.parent == cache_dir and other != model_dir
    assert (model_dir / tiny_model._MARKER).is_file()
    assert (other / "model.safetensors").read_bytes() != (model_dir / "model.safetensors").read_bytes()
    assert (other / "tokenizer.json").read_bytes() == (model_dir / "tokenizer.json").read_bytes()


def test_failed_build_leaves_nothing(tmp_path, monkeypatch):
    def half_build(recipe, out):
        (out / "config.json").write_text("{}")
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(tiny_model, "_write_model", half_build)
    with pytest.raises(RuntimeError, match="simulated crash"):
        tiny_model._build(_recipe(), tmp_path)
    assert not (tmp_path / tiny_model._model_dir_name(_recipe())).exists()
    assert not list(tmp_path.glob(".tmp-*"))


def test_recovers_from_killed_build(tmp_path):
    # A builder killed with SIGKILL leaves its temp dir; a directory without the
    # marker (never produced by the atomic rename) must not be trusted either.
    name = tiny_model._model_dir_name(_recipe())
    stale = tmp_path / f".tmp-{name}-dead"
    stale.mkdir(parents=True)
    (stale / "config.json").write_text("{}")
    bogus = tmp_path / name
    bogus.mkdir()
    (bogus / "config.json").write_text("{}")

    path = tiny_model._build(_recipe(), tmp_path)
    assert path == bogus
    assert (path / tiny_model._MARKER).is_file()
    assert (path / "model.safetensors").is_file()
    assert not stale.exists()


def test_concurrent_builders_build_once(tmp_path, monkeypatch):
    # flock() locks belong to the open file description, so two threads that
    # each open the lock file exclude each other like two processes would.
    calls = []
    real = tiny_model._write_model
    barrier = threading.Barrier(3)

    def counting(recipe, out):
        calls.append(out)
        real(recipe, out)

    monkeypatch.setattr(tiny_model, "_write_model", counting)
    results, errors = [], []

    def worker():
        try:
            barrier.wait()
            results.append(tiny_model._build(_recipe(), tmp_path))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(calls) == 1
    assert len(set(results)) == 1
    assert (results[0] / tiny_model._MARKER).is_file()


def test_module_imports_without_torch(tmp_path):
    # Import the very copy under test (installed or checkout) in a fresh process.
    pkg_parent = str(pathlib.Path(tiny_model.__file__).resolve().parents[2])
    code = (
        "import sys; sys.path.insert(0, %r); import driftcheck.models.tiny as m; "
        "import driftcheck.models.engine_env as e; "
        "assert m.__file__ == %r, m.__file__; assert e.__file__ == %r, e.__file__; "
        "e.tiny_engine_kwargs(); e.cpu_engine_env(); m._model_dir_name(m._DEFAULT_RECIPE); "
        "heavy = [k for k in ('torch', 'transformers', 'tokenizers', 'vllm') if k in sys.modules]; "
        "assert not heavy, heavy" % (pkg_parent, tiny_model.__file__, engine_env.__file__)
    )
    subprocess.run([sys.executable, "-P", "-c", code], check=True, timeout=60, cwd=tmp_path)


def test_engine_helpers():
    kw = tiny_engine_kwargs()
    assert kw["dtype"] == "float32"
    assert kw["seed"] == 0
    assert kw["max_model_len"] <= 2048
    assert "enforce_eager" not in kw
    env = cpu_engine_env()
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert all(isinstance(v, str) for v in env.values())
    assert int(env["OMP_NUM_THREADS"]) >= 1
