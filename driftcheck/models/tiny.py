"""A tiny, locally built Qwen2 causal LM for exercising vLLM without downloads.

``ensure_tiny_model()`` builds (once) a 4-layer, 128-wide Qwen2 model with
random weights from a fixed seed and a byte-level BPE tokenizer trained on a
small corpus generated in code.  Nothing is fetched from the network.  The
result is cached under ``$DRIFTCHECK_CACHE`` (or ``~/.cache/driftcheck``) in a
directory whose name carries a short hash of the build recipe, so a change of
the recipe builds a new model beside the old one instead of reusing it.

The returned directory loads offline with both::

    transformers.AutoModelForCausalLM.from_pretrained(path)
    vllm.LLM(model=str(path), **tiny_engine_kwargs())   # driftcheck.models.engine_env

Running vLLM on CPU (the settings live in driftcheck.models.engine_env)
----------------------------------------------------------------------
vLLM's CPU backend sizes its KV cache from ``VLLM_CPU_KVCACHE_SPACE`` (GiB);
set the variables from :func:`cpu_engine_env` in ``os.environ`` *before* the
engine is created (before ``vllm.LLM(...)``; the engine-core subprocess reads
them at start)::

    os.environ.update(cpu_engine_env())
    llm = vllm.LLM(model=str(ensure_tiny_model()), **tiny_engine_kwargs())

Pass ``dtype="float32"`` (as :func:`tiny_engine_kwargs` does): with
``dtype="auto"`` vLLM 0.32 on CPU logs "Downcasting torch.float32 to
torch.bfloat16." and runs the model in bf16.

Measured on the 2-core CPU box (vLLM 0.32.0 CPU, torch 2.13), for reference:

* ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` runs the engine in this process: it
  seeds the global RNGs (``seed``), replaces ``torch.set_num_threads`` with a
  no-op that logs a warning, and sets torch threads for serving.  ``=1``
  spawns an engine-core and a worker process, each re-importing vLLM (~25 s
  more start-up) and ~5 s of shutdown at exit.
* The very first engine on a machine spends ~13 s inspecting the model
  architecture in a subprocess (cached afterwards in ``~/.cache/vllm``).
* Even with ``enforce_eager=True``, the first request that asks for
  ``logprobs``/``prompt_logprobs`` triggers a ``torch.compile`` of a sampler
  helper (~20 s cold, a few s with a warm inductor cache).

This module imports nothing heavy at import time: torch, transformers and
tokenizers are imported inside the build, so driftcheck's static scanner can
import it without torch installed.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import inspect
import json
import os
import pathlib
import random
import shutil
import tempfile
from typing import Any, Iterator

from driftcheck import env

__all__ = [
    "TINY_MODEL_LAYERS",
    "TINY_MODEL_HIDDEN",
    "ensure_tiny_model",
]

TINY_MODEL_LAYERS = 4
TINY_MODEL_HIDDEN = 128

# Bump when the build code changes in a way the recipe dict does not capture.
_RECIPE_VERSION = 1

# Written last inside a finished build; a directory without it is not a model.
_MARKER = "driftcheck_tiny_model.json"

EOS_TOKEN = "<|endoftext|>"
_SPECIAL_TOKENS = [EOS_TOKEN, "<|im_start|>", "<|im_end|>"]

_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_DEFAULT_RECIPE: dict[str, Any] = {
    "version": _RECIPE_VERSION,
    "seed": 0,
    "config": {
        "hidden_size": TINY_MODEL_HIDDEN,
        "num_hidden_layers": TINY_MODEL_LAYERS,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 256,
        "max_position_embeddings": 2048,
        "rope_theta": 10000.0,
        "rms_norm_eps": 1e-6,
        # Wider than the HF default (0.02) so logits are peaked enough that
        # greedy decoding is not decided by float noise.
        "initializer_range": 0.1,
        "tie_word_embeddings": False,
        "use_sliding_window": False,
        "hidden_act": "silu",
        "attention_dropout": 0.0,
    },
    "tokenizer": {
        "vocab_size": 1024,
        "min_frequency": 2,
        "special_tokens": list(_SPECIAL_TOKENS),
        "eos_token": EOS_TOKEN,
        "bos_token": EOS_TOKEN,
        "pad_token": EOS_TOKEN,
        "corpus_sentences": 600,
        "corpus_seed": 1234,
    },
}


# --------------------------------------------------------------------------
# public helpers


def ensure_tiny_model(cache_dir: str | os.PathLike[str] | None = None) -> pathlib.Path:
    """Return the directory of the tiny model, building it on first use.

    ``cache_dir`` defaults to ``$DRIFTCHECK_CACHE`` or ``~/.cache/driftcheck``.
    Safe against crashes (built in a temp dir, renamed into place) and against
    concurrent builders (a per-model ``flock``).
    """
    return _build(_DEFAULT_RECIPE, cache_dir)


# --------------------------------------------------------------------------
# recipe / cache layout


def _default_cache_dir() -> pathlib.Path:
    return env.cache_dir()


def _recipe_hash(recipe: dict[str, Any]) -> str:
    """Short hash of the recipe, including the generated corpus text."""
    payload = {
        "recipe": recipe,
        "corpus_sha256": hashlib.sha256(
            "\n".join(_corpus(recipe["tokenizer"])).encode("utf-8")
        ).hexdigest(),
        "chat_template": _CHAT_TEMPLATE,
        "pretokenize_regex": _QWEN2_PRETOKENIZE_REGEX,
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:12]


def _model_dir_name(recipe: dict[str, Any]) -> str:
    cfg = recipe["config"]
    return (
        f"tiny-qwen2-l{cfg['num_hidden_layers']}-h{cfg['hidden_size']}-"
        f"{_recipe_hash(recipe)}"
    )


def _is_complete(path: pathlib.Path) -> bool:
    return (path / _MARKER).is_file()


@contextlib.contextmanager
def _locked(lock_path: pathlib.Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX: rely on atomic rename
        yield
        return
    with open(lock_path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _build(
    recipe: dict[str, Any] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> pathlib.Path:
    """Build (or find in the cache) the model described by ``recipe``."""
    recipe = copy.deepcopy(_DEFAULT_RECIPE if recipe is None else recipe)
    root = pathlib.Path(cache_dir).expanduser() if cache_dir is not None else _default_cache_dir()
    name = _model_dir_name(recipe)
    final = root / name
    if _is_complete(final):
        return final

    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / f".{name}.lock"):
        if _is_complete(final):  # another process finished while we waited
            return final
        # We hold the lock, so any temp dir for this name is a crashed build's.
        for stale in root.glob(f".tmp-{name}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if final.exists():  # incomplete leftover (no marker): never trust it
            shutil.rmtree(final, ignore_errors=True)
        tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=root))
        try:
            _write_model(recipe, tmp)
            _fix_permissions(tmp)
            (tmp / _MARKER).write_text(
                json.dumps({"name": name, "recipe": recipe}, indent=2, sort_keys=True) + "\n"
            )
            try:
                os.replace(tmp, final)
            except OSError:
                # Someone without the lock (e.g. a filesystem where flock is a
                # no-op) won the race; theirs is as good as ours.
                if not _is_complete(final):
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _fix_permissions(path: pathlib.Path) -> None:
    """mkdtemp makes a 0700 dir; give the tree the usual umask-based modes."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o777 & ~umask)
    for p in path.rglob("*"):
        p.chmod((0o777 if p.is_dir() else 0o666) & ~umask)


# --------------------------------------------------------------------------
# corpus


_SUBJECTS = [
    "the model", "a small engine", "the scheduler", "every worker", "the tokenizer",
    "our test", "the cache", "a request", "the sampler", "this kernel", "the server",
    "a quick brown fox", "the lazy dog", "my friend", "the old library", "a new version",
]
_VERBS = [
    "reads", "writes", "checks", "builds", "loads", "returns", "compares", "measures",
    "generates", "skips", "splits", "merges", "computes", "prints", "stores", "sends",
]
_OBJECTS = [
    "the next token", "a batch of prompts", "the logits", "forty two numbers",
    "the attention weights", "a long sentence", "the hidden state", "every layer",
    "the output file", "a simple story", "the first word", "random bytes",
    "the key value cache", "a sorted list", "the final answer", "some plain text",
]
_ENDINGS = [
    "before lunch", "in the morning", "without any errors", "very quickly",
    "again and again", "on the CPU", "for each step", "at the end of the day",
    "with great care", "when asked", "in under a second", "as expected",
]
_CODE = [
    "def add(a, b):\n    return a + b\n",
    "for i in range(10):\n    print(i * i)\n",
    "if x > 0 and y < 0:\n    z = x - y\nelse:\n    z = 0\n",
    "import os\nimport sys\npath = os.path.join(root, name)\n",
    "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n",
    "values = [1, 2, 3, 4, 5]\ntotal = sum(values) / len(values)\n",
    "while True:\n    line = f.readline()\n    if not line:\n        break\n",
    "result = {\"key\": \"value\", \"count\": 3}\n",
    "x = np.zeros((4, 128), dtype=np.float32)\n",
    "return json.dumps(data, indent=2, sort_keys=True)\n",
]
_WORDS = (
    "about above after again against all also always among and another answer any "
    "apple around ask away back ball because become before begin behind believe best "
    "better between big bird black blue boat body book both bread bring brother brown "
    "build busy call came can car care carry case cat change child city clean clear "
    "close cold color come common could country course cover cross cup cut dark day "
    "deep differ does dog done door down draw dream drink drive during early earth east "
    "eat egg end enough even evening every example eye face fact fall family far farm "
    "fast father feel field figure fill find fire first fish five floor flower fly "
    "follow food foot force forest form four free friend from front full game garden "
    "gave give glass gold good great green ground group grow half hand happy hard head "
    "hear heart heavy help here high hill hold home horse hot hour house however hundred "
    "idea important inside island just keep kind king know land language large last "
    "late laugh learn leave left letter life light like line list listen little live "
    "long look love low machine made main make many map mark matter mean measure middle "
    "might mile mind minute miss money moon more morning most mother mountain move much "
    "music must name near need never new next night north nothing notice number ocean "
    "office often old only open order other over page paper part pass people perhaps "
    "picture piece place plan plant play point power problem produce pull question "
    "quick rain ran reach read ready real red remember rest right river road rock room "
    "round rule run said same saw school sea second seem sentence set several shape "
    "ship short should show side simple since sing sister sit size sleep slow small snow "
    "some song soon sound south space speak special spring stand star start state stay "
    "step still stone stop story street strong study such summer sun sure surface table "
    "take talk teacher tell test than thing think third those though thought thousand "
    "three through time today together told took tree true try turn under until upon "
    "usual valley very voice walk wall want warm watch water wave weather week weight "
    "went west what wheel where which while white whole why wide wild wind window "
    "winter wish without woman wonder wood word work world write wrong yard year yellow "
    "young"
).split()

_EXTRA = [
    "Hello, world! How are you today?",
    "The year 2024 had 366 days; 1999 had 365.",
    "Café, naïve, résumé, über, São Paulo, Zürich.",
    "Prices: $3.50, 12%, 7/8, 1e-6, 0x1F, 3.14159.",
    "Question: what is 17 + 25? Answer: 42.",
    "User: tell me a story. Assistant: Once upon a time there was a tiny model.",
]


def _corpus(tok_recipe: dict[str, Any]) -> list[str]:
    """Deterministic English-ish text, numbers and code snippets."""
    rng = random.Random(tok_recipe["corpus_seed"])
    lines: list[str] = []
    for i in range(tok_recipe["corpus_sentences"]):
        s = (
            f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} "
            f"{rng.choice(_ENDINGS)}."
        )
        s = s[0].upper() + s[1:]
        kind = i % 6
        if kind == 0:
            s += f" It took {rng.randint(1, 999)} ms and used {rng.randint(1, 64)} MB."
        elif kind == 1:
            s += f" Step {i}: loss = {rng.random():.4f}, lr = {rng.choice(['1e-3', '3e-4', '5e-5'])}."
        elif kind == 2:
            s += " " + rng.choice(_EXTRA)
        elif kind == 3:
            s = rng.choice(_CODE) + "# " + s
        elif kind == 4:
            s += " " + " ".join(str(rng.randint(0, 10**rng.randint(1, 6))) for _ in range(4))
        lines.append(s)
        words = [rng.choice(_WORDS) for _ in range(rng.randint(6, 14))]
        words[0] = words[0].capitalize()
        lines.append(" ".join(words) + rng.choice([".", "!", "?", ",", ";"]))
    lines.extend(_CODE)
    lines.extend(_EXTRA)
    lines.extend(str(n) for n in range(0, 1000, 7))
    return lines


# --------------------------------------------------------------------------
# build


@contextlib.contextmanager
def _offline_env() -> Iterator[None]:
    keys = {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    }
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(keys)
    try:
        from transformers.utils import logging as hf_logging

        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
    except Exception:  # pragma: no cover - very old/new transformers
        hf_logging = None
    try:
        yield
    finally:
        if hf_logging is not None and bars:
            hf_logging.enable_progress_bar()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# The pre-tokenizer regex of Qwen2's tokenizer.  transformers >= 5 ignores the
# pipeline stored in tokenizer.json for model_type "qwen2": AutoTokenizer
# builds a Qwen2Tokenizer from the vocab and merges alone, with NFC + this
# regex + ByteLevel(use_regex=False).  Training with exactly that pipeline
# keeps tokenizer.json, transformers 4/5 and vLLM tokenizing identically.
_QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"""
    r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


def _train_tokenizer(tok_recipe: dict[str, Any]):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=tok_recipe["vocab_size"],
        min_frequency=tok_recipe["min_frequency"],
        special_tokens=list(tok_recipe["special_tokens"]),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(tok_recipe), trainer=trainer)
    return tok


def _write_model(recipe: dict[str, Any], out: pathlib.Path) -> None:
    with _offline_env():
        import torch
        from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

        tok_recipe = recipe["tokenizer"]
        fast = PreTrainedTokenizerFast(
            tokenizer_object=_train_tokenizer(tok_recipe),
            eos_token=tok_recipe["eos_token"],
            bos_token=tok_recipe["bos_token"],
            pad_token=tok_recipe["pad_token"],
            model_max_length=recipe["config"]["max_position_embeddings"],
            clean_up_tokenization_spaces=False,
        )
        fast.chat_template = _CHAT_TEMPLATE
        fast.save_pretrained(str(out))
        specials = {
            "bos_token": tok_recipe["bos_token"],
            "eos_token": tok_recipe["eos_token"],
            "pad_token": tok_recipe["pad_token"],
            "unk_token": tok_recipe["eos_token"],
            "additional_special_tokens": [
                t for t in tok_recipe["special_tokens"]
                if t not in (tok_recipe["bos_token"], tok_recipe["eos_token"], tok_recipe["pad_token"])
            ],
        }
        tc_path = out / "tokenizer_config.json"
        tc = json.loads(tc_path.read_text())
        # transformers 5 writes "TokenizersBackend", which 4.x cannot load; both
        # load "Qwen2Tokenizer" (5.x forces it for model_type qwen2 anyway).
        tc["tokenizer_class"] = "Qwen2Tokenizer"
        tc.setdefault("unk_token", specials["unk_token"])
        tc.setdefault("add_bos_token", False)
        tc.setdefault("add_eos_token", False)
        tc_path.write_text(json.dumps(tc, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        stm_path = out / "special_tokens_map.json"
        if not stm_path.exists():
            stm_path.write_text(json.dumps(specials, indent=2, sort_keys=True) + "\n")

        vocab = len(fast)
        config = Qwen2Config(
            **recipe["config"],
            vocab_size=vocab,
            bos_token_id=fast.convert_tokens_to_ids(tok_recipe["bos_token"]),
            eos_token_id=fast.convert_tokens_to_ids(tok_recipe["eos_token"]),
            pad_token_id=fast.convert_tokens_to_ids(tok_recipe["pad_token"]),
        )
        # transformers >= 4.56 writes "dtype"; older ones "torch_dtype".
        config.dtype = torch.float32
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(recipe["seed"])
            model = Qwen2ForCausalLM(config)
        model = model.to(torch.float32).eval()
        save_kwargs: dict[str, Any] = {}
        if "safe_serialization" in inspect.signature(model.save_pretrained).parameters:
            save_kwargs["safe_serialization"] = True  # transformers 4.x; 5.x always is
        model.save_pretrained(str(out), **save_kwargs)
        if not (out / "model.safetensors").is_file():
            raise RuntimeError(f"expected {out / 'model.safetensors'} after save_pretrained")
