"""ESamp's math and distiller, against straightforward references (no engine)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from esamp.distiller import OnlineDistiller
from esamp.fused import SAMPLING_EPS, fused_logits


def reference_fused(ref, dist, beta, temperature):
    """Row by row, token by token: the formula as the paper writes it."""
    out = ref.clone()
    for r in range(ref.shape[0]):
        b, t = float(beta[r]), float(temperature[r])
        if b == 0 or t < SAMPLING_EPS:
            continue
        for v in range(ref.shape[1]):
            if math.isinf(float(ref[r, v])) and float(ref[r, v]) < 0:
                out[r, v] = float("-inf")
            else:
                out[r, v] = (1 + b) * float(ref[r, v]) - b * float(dist[r, v]) / t
    return out


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 5), vocab=st.integers(2, 40), seed=st.integers(0, 10_000), data=st.data())
def test_fused_logits_match_the_reference(rows, vocab, seed, data):
    gen = torch.Generator().manual_seed(seed)
    raw = torch.randn(rows, vocab, generator=gen) * 3
    temperature = torch.tensor(data.draw(st.lists(st.sampled_from([0.0, 0.3, 0.7, 1.0, 1.5]), min_size=rows,
                                                  max_size=rows)))
    beta = torch.tensor(data.draw(st.lists(st.sampled_from([0.0, 0.4, 0.8, 1.2, -1.5]), min_size=rows,
                                           max_size=rows)))
    # what vLLM hands the hook: logits / temperature, then filtered (-inf outside the candidates)
    safe_t = torch.where(temperature < SAMPLING_EPS, torch.ones_like(temperature), temperature)
    ref = raw / safe_t.unsqueeze(1)
    keep = torch.rand(rows, vocab, generator=gen) < 0.4
    keep[:, 0] = True  # every row keeps at least one candidate
    ref = torch.where(keep, ref, torch.full_like(ref, float("-inf")))
    dist = torch.randn(rows, vocab, generator=gen) * 3

    got = fused_logits(ref, dist, beta, temperature, any_beta_at_most_minus_one=bool((beta <= -1).any()))
    want = reference_fused(ref, dist, beta, temperature)
    assert torch.equal(torch.isinf(got), torch.isinf(want))
    assert torch.allclose(got[torch.isfinite(want)], want[torch.isfinite(want)], atol=1e-5)
    # filtered-out tokens stay impossible
    assert torch.isinf(got[~keep]).all() and (got[~keep] < 0).all()
    # β=0 and greedy rows are returned bit for bit
    untouched = (beta == 0) | (temperature < SAMPLING_EPS)
    assert torch.equal(got[untouched], ref[untouched])


def test_fused_logits_shift_mass_away_from_what_the_distiller_predicts():
    ref = torch.tensor([[1.0, 1.0, float("-inf")]])
    dist = torch.tensor([[5.0, 0.0, 9.0]])  # the distiller expects token 0
    out = fused_logits(ref, dist, torch.tensor([0.8]), torch.tensor([1.0]))
    probs = out.softmax(-1)
    assert probs[0, 1] > probs[0, 0] and probs[0, 2] == 0


def test_distiller_learns_a_mapping_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    d = OnlineDistiller(hidden=16, width=32, lr=1e-2, seed=0)
    assert torch.equal(torch.get_rng_state(), before)  # init used its own generator
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(16, 16, generator=gen) * 0.3
    losses = []
    for _ in range(300):
        x = torch.randn(8, 16, generator=gen)
        losses.append(d.train_step(x, x @ w))
    assert sum(losses[-20:]) / 20 < 0.35 * sum(losses[:20]) / 20  # measured: 2.79 -> 0.71
    x = torch.randn(4, 16, generator=gen)
    before_update = d.model(x).detach()
    assert torch.allclose(d.step(x, x @ w).pred, before_update, atol=0)  # the step's prediction: before its update


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 9), hidden=st.integers(1, 12), width=st.integers(1, 12), seed=st.integers(0, 2**16),
       scale=st.sampled_from([1e-3, 1.0, 30.0]))
def test_written_out_gradients_equal_autograd(rows, hidden, width, seed, scale):
    """The training step's gradients (no autograd) against autograd's on the same module, in float64."""
    from esamp.distiller import Distiller

    model = Distiller(hidden, width, seed=seed).double()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, hidden, generator=gen, dtype=torch.float64) * scale
    y = torch.randn(rows, hidden, generator=gen, dtype=torch.float64) * scale
    with torch.no_grad():
        loss, grads = model.loss_and_grads(x, y)
    ref = torch.nn.functional.mse_loss(model(x), y)
    ref.backward()
    assert torch.allclose(loss, ref.detach(), rtol=1e-10, atol=0)
    for got, param in zip(grads, (model.gate_up.weight, model.down.weight)):
        assert got.shape == param.shape
        assert torch.allclose(got, param.grad, rtol=1e-9, atol=1e-12 * float(param.grad.abs().max()))


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 9), pad=st.integers(1, 9), hidden=st.integers(1, 12), width=st.integers(1, 12),
       seed=st.integers(0, 2**16))
def test_a_zero_padded_step_equals_the_unpadded_one(rows, pad, hidden, width, seed):
    """The captured distiller steps (esamp/distiller.py StepGraphs) run a fixed row bucket whose rows past
    the step's are zeros, with the loss scaled by the real element count: loss, gradients and the
    prediction on the real rows must be the unpadded step's."""
    from esamp.distiller import Distiller

    model = Distiller(hidden, width, seed=seed).double()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, hidden, generator=gen, dtype=torch.float64)
    y = torch.randn(rows, hidden, generator=gen, dtype=torch.float64)
    zeros = torch.zeros(pad, hidden, dtype=torch.float64)
    with torch.no_grad():
        loss, grads = model.loss_and_grads(x, y)
        parts = model.forward_parts(torch.cat([x, zeros]))
        pred = parts["pred"][:rows].clone()
        inv = torch.tensor(1.0 / (rows * hidden), dtype=torch.float64)
        padded_loss, padded_grads = model.loss_and_grads_from(parts, torch.cat([y, zeros]), inv)
    assert torch.allclose(pred, model(x), rtol=1e-12, atol=1e-12)
    assert torch.allclose(padded_loss, loss, rtol=1e-12, atol=0)
    for got, want in zip(padded_grads, grads):
        assert torch.allclose(got, want, rtol=1e-10, atol=1e-14)


def test_loss_book_reads_every_steps_loss_from_the_running_sums():
    """The bookkeeping copies the distillers' loss sums every LOSS_EVERY steps, not each step: what it
    counts must still be every step's loss (sum, last, history points), over two distillers taking turns."""
    from esamp.counters import LOSS_EVERY, ESampCounters
    from esamp.training import LossBook

    counters = ESampCounters()
    book = LossBook(counters)
    distillers = [OnlineDistiller(8, 4, 1e-2, seed=s) for s in (0, 1)]
    gen = torch.Generator().manual_seed(3)
    losses, rows_total, history = [], 0, []
    for i in range(2 * LOSS_EVERY + 4):  # after the last copy: d1, d0, d1 (the last loss is d1's)
        rows = 2 + i % 3
        x = torch.randn(rows, 8, generator=gen)
        step = book.train(distillers[i % 2], x, x * 0.5)
        losses.append(float(step.loss))
        rows_total += rows
        if (i + 1) % LOSS_EVERY == 1:
            history.append((i + 1, losses[-1]))
        book.read(block=False)
    book.read(block=True)
    assert counters.train_steps == len(losses) and counters.rows_trained == rows_total
    assert counters.loss_sum == pytest.approx(sum(losses), rel=1e-6)
    assert counters.loss_last == pytest.approx(losses[-1], rel=1e-6)
    assert [s for s, _ in counters.loss_history] == [s for s, _ in history]
    assert [v for _, v in counters.loss_history] == pytest.approx([v for _, v in history], rel=1e-6)
    assert not book.unread and not book.pending


def test_bf16_gemms_stay_close_to_fp32_and_keep_fp32_weights():
    """precision='bf16': GEMM operands in bf16, everything else (and the weights, Adam's state) in fp32."""
    from esamp.distiller import Distiller

    model = Distiller(64, 32, seed=3)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(16, 64, generator=gen) * 3
    y = x + torch.randn(16, 64, generator=gen)
    with torch.no_grad():
        loss, grads = model.loss_and_grads(x, y)
        low_loss, low_grads = model.loss_and_grads(x, y, low=torch.bfloat16)
    assert low_loss.dtype == torch.float32 and all(g.dtype == torch.float32 for g in low_grads)
    assert abs(float(low_loss) - float(loss)) < 1e-2 * float(loss)
    for got, want in zip(low_grads, grads):
        assert float((got - want).norm()) < 3e-2 * float(want.norm())
    d = OnlineDistiller(64, 32, 1e-2, seed=3, precision="bf16")
    d.train_step(x, y)
    assert all(p.dtype == torch.float32 for p in d.model.parameters())
    with pytest.raises(ValueError, match="precision"):
        OnlineDistiller(8, 8, 1e-2, precision="fp8")
    from esamp.config import ESampConfig, ESampConfigError

    with pytest.raises(ESampConfigError, match=r"\['precision'\] must be one of"):
        ESampConfig.from_dict({"precision": "fp16"})


def test_captures_pause_the_cyclic_collector_and_restore_it():
    import gc

    from esamp.capture import no_collection

    assert gc.isenabled()
    with no_collection():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), no_collection():
        raise RuntimeError("a failed capture")
    assert gc.isenabled()  # restored on the way out of a failure too
    gc.disable()
    try:
        with no_collection():
            pass
        assert not gc.isenabled()  # left as the caller had it
    finally:
        gc.enable()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_dropped_distiller_is_not_held_in_a_reference_cycle(precision):
    """Held in a cycle, a distiller is freed by the cyclic collector at some later collection; on CUDA one ran
    inside the next distiller's capture and destroyed the old one's graphs there, which failed that capture (16fe23b:
    StepGraphs held its owner's bound methods). The CPU builds no graphs; the distiller's own references are
    judged here, the captured ones by probes/kernel_check.py on CUDA."""
    import weakref

    from esamp.capture import freed_only_by_collector, no_collection

    class Cyclic:
        def __init__(self):
            self.me = self

    with no_collection():  # no automatic collection between the drop and the judge
        control = Cyclic()
        alive = weakref.ref(control)
        del control
        assert freed_only_by_collector(alive)  # the judge sees a cycle where there is one

    # torch imports torch._dynamo in the process's first optimizer and a module imported then keeps the caller's
    # frames: done here, so the distiller below is not the one kept, and its being freed says something
    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])
    d = OnlineDistiller(48, 16, 1e-3, precision=precision)
    x = torch.randn(6, 48, generator=torch.Generator().manual_seed(0))
    for _ in range(4):
        d.step(x, x + 1)
    d.losses_to_host()
    alive = weakref.ref(d)
    del d
    assert not freed_only_by_collector(alive)
    assert alive() is None  # freed by its reference count


def test_on_off_settings_must_be_booleans_and_reach_the_distiller(monkeypatch):
    """A string "false" would read as true: the on/off settings take booleans only."""
    from esamp.config import ESampConfig, ESampConfigError

    for name in ("enable", "cuda_graphs", "side_stream"):
        with pytest.raises(ESampConfigError, match=f"{name} must be true or false, not 'false'"):
            ESampConfig.from_dict({name: "false"})
    config = ESampConfig.from_dict({"enable": True, "side_stream": False, "cuda_graphs": False})
    assert config.side_stream is False and config.cuda_graphs is False
    from esamp import groups
    from esamp.counters import ESampCounters

    made = []
    monkeypatch.setattr("esamp.distiller.OnlineDistiller", lambda *a, **k: made.append(k) or object())
    groups.Groups(config, ESampCounters()).distiller("all", 8, "cpu")
    assert made[0]["side_stream"] is False and made[0]["graphs"] is False  # the engine's settings, as given


def test_the_training_step_never_starts_autograd():
    """No backward(): the step must not build a graph (the autograd engine's device thread failed to start
    in tensor-parallel vLLM workers)."""
    d = OnlineDistiller(hidden=8, width=16, lr=1e-2, seed=0)
    x, y = torch.randn(5, 8), torch.randn(5, 8)
    calls = []
    original = torch.autograd.backward
    torch.autograd.backward = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        before = [p.detach().clone() for p in d.model.parameters()]
        d.train_step(x, y)
    finally:
        torch.autograd.backward = original
    assert not calls
    assert all(not torch.equal(b, p) for b, p in zip(before, d.model.parameters()))  # it did update


def test_training_works_under_inference_mode():
    """vLLM samples under torch.inference_mode(); ESamp trains from inside it."""
    d = OnlineDistiller(hidden=8, width=16, lr=1e-2, seed=0)
    with torch.inference_mode():
        x = torch.randn(4, 8)
        first = d.train_step(x, x * 2)
        for _ in range(50):
            last = d.train_step(x, x * 2)
    assert last < first


def test_silent_post_filter_hook_stops_the_run():
    """ESamp prepared fused logits for 4 random-sampling steps and the sampler hook never used them."""
    import pytest

    from esamp.controller import MISS_LIMIT, ESampController, ESampGateFailed

    c = ESampController()
    logits = torch.zeros(2, 10)
    with pytest.raises(ESampGateFailed, match=r"post-filter hook did not fire .*topk_topp\.forward_"):
        for _ in range(MISS_LIMIT + 1):
            c.pending, c.expect_post_filter = (None, None, None), True  # what on_sample leaves for the hook
            c._check_hooks_fired(logits, object())
    # a hook that consumes the fused logits resets the count
    c = ESampController()
    for _ in range(2 * MISS_LIMIT):
        c.pending, c.expect_post_filter = None, True
        c._check_hooks_fired(logits, object())


def test_missing_prepare_view_stops_an_enabled_run():
    import pytest

    from driftcheck.shims.hook_points import HOOKS
    from esamp.controller import MISS_LIMIT, ESampController, ESampGateFailed

    saved = (HOOKS.engine_esamp_enabled, HOOKS.counters.requests_added)
    HOOKS.engine_esamp_enabled, HOOKS.counters.requests_added = True, 3
    try:
        c = ESampController()
        with pytest.raises(ESampGateFailed, match=r"no prepare view .*runner\.prepare_inputs"):
            for _ in range(MISS_LIMIT):
                c._check_hooks_fired(torch.zeros(3, 10), None)
        HOOKS.engine_esamp_enabled = False  # ESamp off: no view is nobody's business
        c = ESampController()
        for _ in range(2 * MISS_LIMIT):
            c._check_hooks_fired(torch.zeros(3, 10), None)
    finally:
        HOOKS.engine_esamp_enabled, HOOKS.counters.requests_added = saved


class _HeadModel(torch.nn.Module):
    """A model as ESamp sees it: a final norm, a plain LM head and compute_logits (vLLM's shape)."""

    def __init__(self, hidden: int, vocab: int, seed: int) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        from types import SimpleNamespace

        self.norm_weight = torch.rand(hidden, generator=gen) + 0.5
        self.model = SimpleNamespace(norm=lambda h: h * torch.rsqrt((h * h).mean(-1, keepdim=True) + 1e-6)
                                     * self.norm_weight)
        self.lm_head = torch.nn.Linear(hidden, vocab, bias=False)
        with torch.no_grad():
            self.lm_head.weight.copy_(torch.randn(vocab, hidden, generator=gen))
        self.logits_processor = SimpleNamespace(scale=1.0, soft_cap=None, logits_as_input=False)

    def compute_logits(self, hidden):
        return hidden @ self.lm_head.weight.T


def _fuse(sampler, model, ref, pred, betas, temperature):
    from types import SimpleNamespace

    from esamp.intervene import Pending

    view = SimpleNamespace(runner=SimpleNamespace(get_model=lambda: model))
    batch = SimpleNamespace(logits=ref, sampling=SimpleNamespace(temperature=temperature))
    return sampler.fuse(Pending(pred, betas, view), batch)


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 6), vocab=st.integers(8, 300), seed=st.integers(0, 10_000), peaked=st.booleans(),
       data=st.data())
def test_candidate_path_equals_the_dense_path(rows, vocab, seed, peaked, data):
    """logits_dist at the candidates only gives the fused logits the dense LM head gives, on random
    and on peaked (few-candidate) logits; a row with more candidates than gathered is left as filtered."""
    from esamp.counters import ESampCounters
    from esamp.intervene import FusedSampler

    hidden = 16
    model = _HeadModel(hidden, vocab, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    scale = 8.0 if peaked else 1.0
    ref = torch.randn(rows, vocab, generator=gen) * scale
    keep_counts = data.draw(st.lists(st.integers(1, vocab), min_size=rows, max_size=rows))
    ranks = ref.argsort(dim=-1, descending=True).argsort(dim=-1)
    ref = torch.where(ranks < torch.tensor(keep_counts).unsqueeze(1), ref, torch.full_like(ref, float("-inf")))
    pred = torch.randn(rows, hidden, generator=gen)
    betas = torch.tensor(data.draw(st.lists(st.sampled_from([0.0, 0.4, 0.8, 1.5]), min_size=rows, max_size=rows)))
    temperature = torch.tensor(data.draw(st.lists(st.sampled_from([0.0, 0.6, 1.0]), min_size=rows, max_size=rows)))

    dense = _fuse(FusedSampler(ESampCounters()), model, ref, pred, betas, temperature)  # first step: dense
    counters = ESampCounters()
    sampler = FusedSampler(counters)
    sampler.recent_max = data.draw(st.integers(1, vocab))  # as if earlier steps had measured this
    k = sampler._path_k()
    candidate = _fuse(sampler, model, ref.clone(), pred, betas, temperature)  # the candidate path works in place
    assert counters.candidate_steps == (1 if k is not None else 0)
    counts = torch.isfinite(ref).sum(-1)
    for r in range(rows):
        if k is not None and counts[r] > k:  # not gathered whole: left as vLLM filtered it
            assert torch.equal(candidate[r], ref[r])
        else:
            assert torch.equal(torch.isinf(candidate[r]), torch.isinf(dense[r]))
            finite = torch.isfinite(dense[r])
            assert torch.allclose(candidate[r][finite], dense[r][finite], atol=1e-4, rtol=1e-5)
    sampler.read_candidates()
    assert counters.rows_overflowed == int(((counts > (k or 10**9)) & (betas != 0)).sum())


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 5), vocab=st.integers(4, 200), k=st.integers(1, 16), ranks=st.integers(2, 4),
       seed=st.integers(0, 10_000))
def test_vocab_parallel_candidate_logits_sum_to_the_full_heads(rows, vocab, k, ranks, seed):
    """Each rank's shard (with vLLM's padding rows at its end) gives its candidates and zeros elsewhere;
    the all-reduce's sum equals the unsharded head's candidate logits, exactly."""
    from driftcheck.adapters.model import candidate_logits, sharded_candidate_logits

    gen = torch.Generator().manual_seed(seed)
    hidden = 8
    weight = torch.randn(vocab, hidden, generator=gen)
    normed = torch.randn(rows, hidden, generator=gen)
    idx = torch.randint(0, vocab, (rows, min(k, vocab)), generator=gen)
    per = -(-vocab // ranks)
    partials = []
    for r in range(ranks):
        start, end = min(r * per, vocab), min((r + 1) * per, vocab)
        shard = torch.cat([weight[start:end], torch.full((per - (end - start), hidden), 7.0)])  # padding rows
        partials.append(sharded_candidate_logits(normed, (shard, start, end - start, lambda t: t), idx))
    total = torch.stack(partials).sum(0)
    assert torch.allclose(total, candidate_logits(None, normed, weight, idx), rtol=1e-6, atol=1e-6)
    assert all(((p != 0).sum(0) <= 1).all() for p in [torch.stack(partials)])  # each candidate from one rank


def test_group_sharing_under_data_parallel_and_sharded_sampling_are_refused_by_name():
    """vLLM's DP front-end balances the n children of one prompt on their own (measured: 0, 2 on one engine,
    1, 3 on the other), so a per-group distiller would see part of its group: refused, naming the setting."""
    from types import SimpleNamespace

    from esamp.config import ESampConfig, ESampConfigError, ESampRequestError, validate_request

    def config(dp, sharing, sharded=None):
        return SimpleNamespace(additional_config={"esamp": {"enable": True, "sharing": sharing}},
                               parallel_config=SimpleNamespace(data_parallel_size=dp,
                                                               enable_batch_sharded_sampling=sharded))

    assert ESampConfig.from_vllm_config(config(1, "group")).sharing == "group"
    assert ESampConfig.from_vllm_config(config(2, "shared")).sharing == "shared"
    with pytest.raises(ESampConfigError, match="sharing.*data_parallel_size=2"):
        ESampConfig.from_vllm_config(config(2, "group"))
    params = SimpleNamespace(extra_args={"esamp_beta": 0.8})
    with pytest.raises(ESampRequestError, match="data_parallel_size=2"):  # the request is refused at admission
        validate_request(params, config(2, "group"))
    validate_request(params, config(2, "shared"))
    # V2's batch-sharded sampling (each TP rank samples its own rows) is refused naming its surface
    with pytest.raises(ESampConfigError, match="parallel.batch_sharded_sampling"):
        ESampConfig.from_vllm_config(config(1, "shared", sharded=True))
    assert ESampConfig.from_vllm_config(config(1, "shared", sharded=False)).enable


def test_the_distiller_steps_time_is_split_by_op_per_step():
    """bench/precision.py kernel_breakdown (on the CPU: the ops' host time): the table is per step (10 and
    20 profiled steps give the same calls a step), sorted by time, and names the step's GEMMs: at least
    the backward's three matrix products a step."""
    from driftcheck.bench.precision import kernel_breakdown

    short, long = (kernel_breakdown(32, 8, 4, "cpu", steps=n, top=50) for n in (10, 20))
    for table in (short, long):
        assert table["unit"] == "host µs" and table["what"] == "ops"
        times = [us for _, us, _ in table["top"]]
        assert times == sorted(times, reverse=True) and table["per_step_us"] >= sum(times) - 0.01 * len(times)
    calls = {name: c for name, _, c in long["top"]}
    assert calls.get("aten::mm", 0) >= 3 and float(calls["aten::mm"]).is_integer(), long["top"]
    assert {name: c for name, _, c in short["top"]}.get("aten::mm") == calls["aten::mm"]
