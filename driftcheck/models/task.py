"""A trained built-in model on a verifiable task with several correct answers per problem.

The task, subset sum: six distinct numbers from 1-15 and a target; answer with numbers from the
six (each at most once) that add up to the target. Targets are sums of 2-4 of the numbers, so most
problems have several correct answers (held-out: median 2, at most 4, 82 % with more than one). The checker is
exact (`correct`), and two answers are the same answer when they are the same set of numbers.

    tokens   0 pad, 1 bos, 2 eos, 3 "=", 4 ":", NUM + v for the number v (0-54)
    prompt   bos a1 a2 a3 a4 a5 a6 = T :
    answer   x1 x2 ... eos

The model is a small Qwen2 (hidden 128, 4 layers, the tiny model's shape) trained here from
fixed seeds on problems drawn fresh each step, with one of the correct answers, chosen uniformly,
as the target; held-out problems (EVAL_SEED) never appear in training. It has no tokenizer:
engines run it with skip_tokenizer_init=True on token ids. `ensure_task_model()` trains it on
first use (a few minutes on 2 CPU cores) and caches it under the driftcheck cache like the tiny
model; `train.json` beside the weights records the training time and accuracies.

Run as `python -m driftcheck.models.task` to build it and print its training record.
"""

from __future__ import annotations

import itertools
import json
import os
import pathlib
import random
import shutil
import tempfile
import time
from dataclasses import dataclass

from driftcheck import env

PAD, BOS, EOS, EQ, COLON, NUM = 0, 1, 2, 3, 4, 10
MAX_VALUE = 4 * 15 - 6  # the largest target: four of the numbers 1-15 (12 + 13 + 14 + 15)
VOCAB = 72
NUMBERS, LOW, HIGH = 6, 1, 15
EVAL_SEED, EVAL_PROBLEMS = 20261201, 400
PROMPT_LEN = NUMBERS + 4
MAX_ANSWER = NUMBERS + 1  # numbers and eos

RECIPE = {
    "version": 1,
    "task": {"numbers": NUMBERS, "low": LOW, "high": HIGH, "subset": [2, 4], "eval_seed": EVAL_SEED},
    "config": {"hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
               "intermediate_size": 512, "max_position_embeddings": 32, "rope_theta": 10000.0,
               "rms_norm_eps": 1e-6, "tie_word_embeddings": False, "hidden_act": "silu", "vocab_size": VOCAB,
               "bos_token_id": BOS, "eos_token_id": EOS, "pad_token_id": PAD},
    "train": {"seed": 0, "steps": 1200, "batch": 128, "lr": 3e-3, "warmup": 100, "weight_decay": 0.01},
}
_MARKER = "train.json"


@dataclass(frozen=True)
class Problem:
    numbers: tuple[int, ...]
    target: int

    @property
    def key(self) -> tuple:
        return tuple(sorted(self.numbers)), self.target

    def prompt_ids(self) -> list[int]:
        return [BOS, *(NUM + v for v in self.numbers), EQ, NUM + self.target, COLON]

    def solutions(self) -> list[frozenset[int]]:
        return [frozenset(c) for r in range(1, NUMBERS + 1) for c in itertools.combinations(self.numbers, r)
                if sum(c) == self.target]


def draw_problem(rng: random.Random) -> Problem:
    numbers = tuple(rng.sample(range(LOW, HIGH + 1), NUMBERS))
    size = rng.randint(*RECIPE["task"]["subset"])
    return Problem(numbers, sum(rng.sample(numbers, size)))


def eval_problems(count: int = EVAL_PROBLEMS) -> list[Problem]:
    """The held-out problems, always the same (EVAL_SEED), distinct from each other."""
    rng, out, seen = random.Random(EVAL_SEED), [], set()
    while len(out) < count:
        p = draw_problem(rng)
        if p.key not in seen:
            seen.add(p.key)
            out.append(p)
    return out


def answer_of(token_ids: list[int]) -> tuple[int, ...] | None:
    """The numbers of a generated answer (up to eos), or None if it is not a list of numbers."""
    out = []
    for t in token_ids:
        if t == EOS:
            break
        if not NUM <= t <= NUM + MAX_VALUE:
            return None
        out.append(t - NUM)
    return tuple(out)


def correct(problem: Problem, token_ids: list[int]) -> frozenset[int] | None:
    """The answer as a set if it is correct (distinct numbers of the problem adding up to the
    target, ended by eos), else None."""
    if EOS not in token_ids:
        return None
    numbers = answer_of(token_ids)
    if not numbers or len(set(numbers)) != len(numbers) or not set(numbers) <= set(problem.numbers):
        return None
    return frozenset(numbers) if sum(numbers) == problem.target else None


# --------------------------------------------------------------------------- training

def _batch(rng: random.Random, size: int, held_out: set):
    import torch

    ids = torch.full((size, PROMPT_LEN + MAX_ANSWER), PAD, dtype=torch.long)
    labels = torch.full_like(ids, -100)
    for i in range(size):
        while True:
            p = draw_problem(rng)
            if p.key not in held_out:
                break
        answer = sorted(rng.choice(p.solutions()), key=lambda _: rng.random())  # any order of one solution
        seq = p.prompt_ids() + [NUM + v for v in answer] + [EOS]
        ids[i, :len(seq)] = torch.tensor(seq)
        labels[i, PROMPT_LEN:len(seq)] = torch.tensor(seq[PROMPT_LEN:])  # the model shifts them itself
    return ids, labels


def greedy_accuracy(model, problems: list[Problem]) -> float:
    """Share of problems whose greedy answer is correct (transformers, batched)."""
    import torch

    hits = 0
    with torch.no_grad():
        for start in range(0, len(problems), 256):
            chunk = problems[start:start + 256]
            ids = torch.tensor([p.prompt_ids() for p in chunk])
            for _ in range(MAX_ANSWER):
                nxt = model(ids).logits[:, -1].argmax(-1, keepdim=True)
                ids = torch.cat([ids, nxt], dim=1)
            hits += sum(correct(p, row[PROMPT_LEN:].tolist()) is not None for p, row in zip(chunk, ids))
    return hits / len(problems)


def train(out: pathlib.Path, log=print) -> dict:
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    t0 = time.perf_counter()
    cfg, tr = RECIPE["config"], RECIPE["train"]
    torch.manual_seed(tr["seed"])
    model = Qwen2ForCausalLM(Qwen2Config(**cfg)).float().train()
    opt = torch.optim.AdamW(model.parameters(), lr=tr["lr"], weight_decay=tr["weight_decay"])
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / tr["warmup"]) * max(0.05, 1 - s / tr["steps"]))
    held_out = {p.key for p in eval_problems()}
    rng = random.Random(tr["seed"])
    losses = []
    for step in range(tr["steps"]):
        ids, labels = _batch(rng, tr["batch"], held_out)
        loss = model(input_ids=ids, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss))
        if step % 200 == 0 or step == tr["steps"] - 1:
            log(f"step {step}: loss {sum(losses[-50:]) / len(losses[-50:]):.3f} ({time.perf_counter() - t0:.0f} s)")
    train_s = time.perf_counter() - t0
    model.eval()
    rng_train = random.Random(tr["seed"] + 1)
    record = {
        "recipe": RECIPE,
        "train_seconds": round(train_s, 1),
        "final_loss": round(sum(losses[-50:]) / 50, 4),
        "greedy_accuracy_train": round(greedy_accuracy(model, [draw_problem(rng_train) for _ in range(1000)]), 3),
        "greedy_accuracy_heldout": round(greedy_accuracy(model, eval_problems()), 3),
        "torch_threads": torch.get_num_threads(),
    }
    model.config.dtype = torch.float32
    model.save_pretrained(str(out))
    GenerationConfig(bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD).save_pretrained(str(out))
    return record


def ensure_task_model(cache_dir: str | os.PathLike | None = None, log=print) -> pathlib.Path:
    """The trained task model's directory, trained on first use (built in a temp dir, renamed)."""
    import hashlib

    root = pathlib.Path(cache_dir) if cache_dir else env.cache_dir()
    digest = hashlib.sha256(json.dumps(RECIPE, sort_keys=True).encode()).hexdigest()[:12]
    final = root / f"task-subsetsum-{digest}"
    if (final / _MARKER).is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    import fcntl

    with open(root / f".{final.name}.lock", "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        if (final / _MARKER).is_file():
            return final
        tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=root))
        try:
            record = train(tmp, log)
            (tmp / _MARKER).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def training_record(model_dir: str | os.PathLike) -> dict:
    return json.loads((pathlib.Path(model_dir) / _MARKER).read_text())


if __name__ == "__main__":
    print(json.dumps(training_record(ensure_task_model()), indent=1))
