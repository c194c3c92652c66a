"""LoSiA / LoSiA-Pro: equivalence, gradients, importance, greedy selection, schedule, accounting."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from harness.models import TINY_LLAMA_CONFIG, build_llama
from methods.base import TrainContext, warmup_cosine
from methods.losia import LosiaConfig, adapt, adapt_pro
from methods.losia.importance import ImportanceTracker, candidates, importance, relocalize
from methods.losia.layer import SubnetLinear

VOCAB = TINY_LLAMA_CONFIG["vocab_size"]
N_LAYERS = TINY_LLAMA_CONFIG["num_hidden_layers"]


def _batch(seed: int, rows: int = 2, length: int = 16) -> dict[str, torch.Tensor]:
    ids = torch.randint(3, VOCAB, (rows, length), generator=torch.Generator().manual_seed(seed))
    return {"input_ids": ids, "labels": ids}


def _ctx(**kw) -> TrainContext:
    return TrainContext(**{"lr": 1e-3, "total_steps": 20, "warmup_steps": 2, "seed": 0, **kw})


def _adapted(efficient: bool, cfg: LosiaConfig | None = None, ctx: TrainContext | None = None):
    model = build_llama(TINY_LLAMA_CONFIG, seed=0)
    fn = adapt_pro if efficient else adapt
    return fn(model, cfg or LosiaConfig(period=2), ctx or _ctx())


def _train_step(a, step: int, micro: list[dict[str, torch.Tensor]], clip: float | None = 1.0, check=None) -> None:
    """Exactly what the uniform driver does for one optimizer step."""
    a.before_step(step)
    for batch in micro:
        (a.model(**batch).loss / len(micro)).backward()
    if check is not None:
        check(a, step)
    a.clip_gradients(clip)
    a.optimizer.step()
    a.scheduler.step()
    a.after_step(step)
    a.zero_grad()


def _micro(step: int) -> list[dict[str, torch.Tensor]]:
    return [_batch(100 * step), _batch(100 * step + 1)]


@pytest.mark.parametrize("dense_rest", [True, False])
def test_losia_and_pro_give_the_same_weights_over_two_relocalization_cycles(dense_rest: bool) -> None:
    cfg = LosiaConfig(period=2, dense_rest=dense_rest)
    plain, pro = _adapted(False, cfg), _adapted(True, dataclasses.replace(cfg))
    assert all(isinstance(m, SubnetLinear) for m in (pro.model.model.layers[0].self_attn.q_proj,))
    initial = {n: p.detach().clone() for n, p in plain.model.named_parameters()}
    steps = 2 * N_LAYERS * cfg.period  # two full cycles over both layers
    for step in range(steps):
        micro = _micro(step)
        _train_step(plain, step, micro)
        _train_step(pro, step, micro)
        pro_params = dict(pro.model.named_parameters())
        for name, p in plain.model.named_parameters():
            torch.testing.assert_close(pro_params[name], p, rtol=1e-5, atol=1e-6, msg=f"{name} at step {step}")
    assert plain.reselections == pro.reselections
    # 4 windows x 7 matrices re-selected, and the subnets really moved
    assert [r[0] for r in pro.reselections] == [1] * 7 + [3] * 7 + [5] * 7 + [7] * 7
    assert [r[1] for r in pro.reselections] == [0] * 7 + [1] * 7 + [0] * 7 + [1] * 7
    assert any(r[4] < 1.0 or r[5] < 1.0 for r in pro.reselections)
    changed = {n for n, p in plain.model.named_parameters() if not torch.equal(p, initial[n])}
    assert any("q_proj" in n for n in changed)
    assert ("model.embed_tokens.weight" in changed) == dense_rest


def test_subnet_gradient_equals_full_gradient_sliced() -> None:
    plain, pro = _adapted(False), _adapted(True)
    batch = _batch(7)
    for a in (plain, pro):
        a.before_step(0)  # slot 0 (layer 0) is profiled: full gradients there, blocks in layer 1
        a.model(**batch).loss.backward()
    for sp, sq in zip(plain.subnets, pro.subnets):
        assert torch.equal(sp.rows, sq.rows) and torch.equal(sp.cols, sq.cols)
        full = sp.weight.grad
        expected = full.index_select(0, sp.rows).index_select(1, sp.cols)
        assert sq.block_grad().shape == (len(sq.rows), len(sq.cols))
        torch.testing.assert_close(sq.block_grad(), expected, rtol=1e-5, atol=1e-7)
        if sq.slot == 0:
            torch.testing.assert_close(sq.full_grad(), full, rtol=1e-5, atol=1e-7)
        else:
            assert sq.full_grad() is None
    # the input gradients flowing to the layers below agree too
    torch.testing.assert_close(pro.model.model.embed_tokens.weight.grad, plain.model.model.embed_tokens.weight.grad,
                               rtol=1e-5, atol=1e-7)


def test_pro_under_bf16_autocast_matches_plain_autograd() -> None:
    """The trainer autocasts to bf16 on CUDA; the custom backward must follow autograd's dtypes."""
    plain, pro = _adapted(False), _adapted(True)
    for a in (plain, pro):
        a.before_step(0)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = a.model(**_batch(3)).loss
        loss.backward()
    for sp, sq in zip(plain.subnets, pro.subnets):
        assert sq.block_grad().dtype == torch.float32
        torch.testing.assert_close(sq.block_grad(), sp.block_grad(), rtol=1e-2, atol=1e-4)
    torch.testing.assert_close(pro.model.model.embed_tokens.weight.grad, plain.model.model.embed_tokens.weight.grad,
                               rtol=1e-2, atol=1e-4)


def test_importance_formula_and_ema_by_hand() -> None:
    theta = torch.tensor([[2.0, -1.0]])
    grad = torch.tensor([[0.5, 3.0]])  # s = theta * g = [1, -3]
    assert importance(theta, grad, "param_mix").tolist() == [[0.5, 7.5]]  # |s - s^2/2|
    assert importance(theta, grad, "param_first").tolist() == [[1.0, 3.0]]
    assert importance(theta, grad, "param_second").tolist() == [[1.0, 9.0]]

    tracker = ImportanceTracker("param_first", beta1=0.5, beta2=0.25)
    tracker.update(theta, grad)  # I = [1, 3]
    # I_bar = 0.5*0 + 0.5*I = [0.5, 1.5];  U_bar = 0.25*0 + 0.75*|I - I_bar| = [0.375, 1.125]
    assert tracker.i_bar.tolist() == [[0.5, 1.5]]
    assert tracker.u_bar.tolist() == [[0.375, 1.125]]
    tracker.update(theta, 2 * grad)  # I = [2, 6]
    # I_bar = [0.25 + 1, 0.75 + 3] = [1.25, 3.75]; U_bar = 0.25*[0.375, 1.125] + 0.75*[0.75, 2.25]
    assert tracker.i_bar.tolist() == [[1.25, 3.75]]
    torch.testing.assert_close(tracker.u_bar, torch.tensor([[0.65625, 1.96875]]))
    torch.testing.assert_close(tracker.score(), torch.tensor([[1.25 * 0.65625, 3.75 * 1.96875]]))
    tracker.reset()
    assert tracker.score() is None and tracker.i_bar is None and tracker.u_bar is None


def test_greedy_strategies_by_hand() -> None:
    s = torch.tensor([[4.0, 0.0, 0.0],
                      [0.0, 2.0, 2.5],
                      [0.0, 3.0, 0.0]])
    # row sums [4, 4.5, 3] -> R={1}; column sums [4, 5, 2.5] -> C={1}
    c = candidates(s, 1, 1)
    assert [c["independent"][0].tolist(), c["independent"][1].tolist()] == [[1], [1]]  # sum 2
    assert [c["rows_first"][0].tolist(), c["rows_first"][1].tolist()] == [[1], [2]]  # sum 2.5
    assert [c["cols_first"][0].tolist(), c["cols_first"][1].tolist()] == [[2], [1]]  # sum 3
    rows, cols, name = relocalize(s, 1, 1)
    assert (rows.tolist(), cols.tolist(), name) == ([2], [1], "cols_first")
    rows, cols, name = relocalize(s.t().contiguous(), 1, 1)
    assert (rows.tolist(), cols.tolist(), name) == ([1], [2], "rows_first")

    s = torch.tensor([[1.0, 2.0, 0.0, 0.0],
                      [2.0, 1.5, 0.0, 0.0],
                      [0.0, 0.0, 0.0, 5.0],
                      [0.0, 0.0, 0.0, 0.5]])
    # R={1,2}, C={1,3}: independent 6.5; rows first C={0,3}: 7; columns first R={0,2}: 7 -> tie, rows first kept
    c = candidates(s, 2, 2)
    assert c["independent"][0].tolist() == [1, 2] and c["independent"][1].tolist() == [1, 3]
    assert c["cols_first"][0].tolist() == [0, 2]
    rows, cols, name = relocalize(s, 2, 2)
    assert (rows.tolist(), cols.tolist(), name) == ([1, 2], [0, 3], "rows_first")
    # rows_first/cols_first never lose to independent given the same R (or C): it only wins ties
    assert relocalize(torch.diag(torch.tensor([3.0, 1.0, 2.0])), 1, 1)[2] == "independent"


def test_rewarm_restarts_only_the_reselected_layer_exactly_at_reselection() -> None:
    period, total, base = 3, 20, 1e-3
    ctx = _ctx(lr=base, total_steps=total, warmup_steps=2)
    a = _adapted(True, LosiaConfig(period=period, min_lr_ratio=0.1), ctx)
    groups = a.optimizer.param_groups
    assert [g["slot"] for g in groups] == [0, 1, None]  # one group per layer + dense
    restarts: dict[int, int] = {}

    def expected(slot, step: int) -> float:
        env = warmup_cosine(step, 2, total, 0.1)
        start = restarts.get(slot)
        return base * env * (1.0 if start is None else min(1.0, (step - start + 1) / period))

    for step in range(12):
        assert [g["lr"] for g in groups] == pytest.approx([expected(g["slot"], step) for g in groups], rel=1e-12)
        _train_step(a, step, [_batch(step)])
        if (step + 1) % period == 0:
            restarts[(step // period) % N_LAYERS] = step + 1
    assert restarts == {0: 9, 1: 12}
    assert [(r[0], r[1]) for r in a.reselections[::7]] == [(2, 0), (5, 1), (8, 0), (11, 1)]
    # just after layer 1's re-selection at step 11: it restarts at T^-1, layer 0 is 2 steps in
    env = warmup_cosine(12, 2, total, 0.1)
    assert groups[1]["lr"] == pytest.approx(base * env / period)
    assert groups[0]["lr"] == pytest.approx(base * env * 3 / period)
    assert groups[2]["lr"] == pytest.approx(base * env)
    assert a.current_lr() == pytest.approx(base * env)

    off = _adapted(True, LosiaConfig(period=period, rewarm=False), ctx)
    for step in range(4):
        _train_step(off, step, [_batch(step)])
    assert [g["lr"] for g in off.optimizer.param_groups] == pytest.approx([base * warmup_cosine(4, 2, total, 0.1)] * 3)


def test_sync_profiles_and_reselects_every_layer_together() -> None:
    a = _adapted(True, LosiaConfig(period=2, sync=True))
    assert [a.profiled_slots(t) for t in range(6)] == [(0, 1), (0, 1), (), (), (0, 1), (0, 1)]
    for step in range(4):
        _train_step(a, step, [_batch(step)])
    assert [(r[0], r[1]) for r in a.reselections] == [(1, 0)] * 7 + [(1, 1)] * 7
    assert a.extra_state_bytes() == 2 * 4 * sum(s.weight.numel() for s in a.subnets)


def _block(d_out: int, d_in: int, p: float) -> int:
    return math.floor(p * d_out) * math.floor(p * d_in)


@pytest.mark.parametrize("efficient", [False, True])
def test_trainable_parameter_accounting(efficient: bool) -> None:
    h, i, kv = 64, 128, 32
    per_layer = 2 * _block(h, h, 0.125) + 2 * _block(kv, h, 0.125) + 3 * _block(i, h, 0.125)
    assert per_layer == 2 * 64 + 2 * 32 + 3 * 128  # 8x8, 4x8, 16x8 blocks
    dense = 2 * VOCAB * h + (2 * N_LAYERS + 1) * h  # embed + lm_head (untied) + norms
    a = _adapted(efficient, LosiaConfig(period=2))
    assert a.trainable_params() == N_LAYERS * per_layer + dense
    _train_step(a, 0, [_batch(0)], clip=None)
    # moments for every block and every dense parameter; fp32, 2 per element
    assert a.optimizer_state_bytes() == 8 * (N_LAYERS * per_layer + dense)
    assert a.record()["subnet_params"] == N_LAYERS * per_layer and a.record()["dense_params"] == dense

    a = _adapted(efficient, LosiaConfig(period=2, rank_factor=0.3, dense_rest=False))
    per_layer = 2 * _block(h, h, 0.3) + 2 * _block(kv, h, 0.3) + 3 * _block(i, h, 0.3)
    assert per_layer == 2 * 19 * 19 + 2 * 9 * 19 + 3 * 38 * 19
    assert a.trainable_params() == N_LAYERS * per_layer
    assert not any(p.requires_grad for n, p in a.model.named_parameters() if "proj" not in n)

    a = _adapted(efficient, LosiaConfig(period=2, output_dim_factor=0.125, dense_rest=False))
    assert a.trainable_params() == N_LAYERS * 576 + (VOCAB // 8) * h  # lm_head: rows only
    assert a.n_slots == N_LAYERS + 1 and a.subnets[0].layer == "lm_head" and a.subnets[0].slot == 0


def test_tied_lm_head_cannot_be_an_output_subnet() -> None:
    model = build_llama({**TINY_LLAMA_CONFIG, "tie_word_embeddings": True}, seed=0)
    with pytest.raises(ValueError, match="tied"):
        adapt_pro(model, LosiaConfig(output_dim_factor=0.125), _ctx())


def test_pro_holds_no_full_gradient_outside_its_profiling_window() -> None:
    a = _adapted(True, LosiaConfig(period=2))
    assert not any(s.weight.requires_grad for s in a.subnets)
    seen = []

    def check(a, step: int) -> None:
        (profiled,) = a.profiled_slots(step)
        expected = []
        for s in a.subnets:
            assert s.weight.grad is None
            if s.slot == profiled:
                assert s.full_grad() is not None and s.full_grad().shape == s.weight.shape
                expected.append(s.full_grad())
            else:
                assert s.full_grad() is None, f"{s.name} holds a full gradient outside its window"
                assert s._block is not None and s._block.shape == s.shape
                expected.append(s._block)
        dense = [p.grad for p in a.params]
        assert all(g is not None for g in dense)
        full_bytes = 4 * sum(s.weight.numel() for s in a.subnets if s.slot == profiled)
        block_bytes = 4 * sum(s.shape[0] * s.shape[1] for s in a.subnets if s.slot != profiled)
        assert a.grad_bytes() == full_bytes + block_bytes + 4 * sum(g.numel() for g in dense)
        seen.append(profiled)

    for step in range(4):
        _train_step(a, step, _micro(step), check=check)
    assert seen == [0, 0, 1, 1]
    # plain LoSiA does hold every full gradient, and says so
    plain = _adapted(False, LosiaConfig(period=2))
    plain.before_step(0)
    plain.model(**_batch(0)).loss.backward()
    assert all(s.weight.grad is not None and s.weight.grad.shape == s.weight.shape for s in plain.subnets)
    assert plain.grad_bytes() == 4 * sum(p.numel() for p in plain.model.parameters())


@pytest.mark.parametrize("efficient", [False, True])
def test_two_micro_batches_equal_one_batch_of_both(efficient: bool) -> None:
    one, two = _adapted(efficient), _adapted(efficient)
    both = _batch(5, rows=4)
    halves = [{k: v[:2] for k, v in both.items()}, {k: v[2:] for k, v in both.items()}]
    grads = {}

    def keep(a, step):
        grads[id(a)] = ([s.block_grad().clone() for s in a.subnets], [p.grad.clone() for p in a.params])

    for step in range(3):  # step 0-1 profile layer 0, step 2 layer 1
        _train_step(one, step, [both], check=keep)
        _train_step(two, step, halves, check=keep)
        for g1, g2 in zip(grads[id(one)][0] + grads[id(one)][1], grads[id(two)][0] + grads[id(two)][1]):
            torch.testing.assert_close(g2, g1, rtol=1e-4, atol=1e-7)
    # Adam normalises tiny gradients, so allow 1% of one lr=1e-3 step on the weights
    for p1, p2 in zip(one.model.parameters(), two.model.parameters()):
        torch.testing.assert_close(p2, p1, rtol=1e-5, atol=1e-5)


def test_subnet_adamw_with_p_one_is_torch_adamw() -> None:
    """p = 1 makes every block the whole matrix: the update must be AdamW's, weight decay included."""
    ctx = _ctx(weight_decay=0.01, warmup_steps=1, total_steps=10)
    a = _adapted(False, LosiaConfig(rank_factor=1.0, period=100, min_lr_ratio=0.1), ctx)
    ref = build_llama(TINY_LLAMA_CONFIG, seed=0)
    opt = torch.optim.AdamW(ref.parameters(), lr=ctx.lr, weight_decay=0.01, foreach=False)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, 1, 10, 0.1))
    for step in range(3):
        _train_step(a, step, [_batch(step)], clip=None)
        ref(**_batch(step)).loss.backward()
        opt.step(); sched.step(); opt.zero_grad()
    for (name, p), q in zip(a.model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7, msg=name)


def test_registry_contract_and_paper_preset() -> None:
    from methods import registry

    for name in ("losia", "losia-pro"):
        spec = registry.get(name)
        assert spec.config_cls is LosiaConfig and isinstance(spec.default_config(), LosiaConfig)
        assert spec.config_keys() == [f.name for f in dataclasses.fields(LosiaConfig)]
        paper = spec.presets["paper"]
        for key in paper:
            assert key.startswith("trainer.") or key in spec.config_keys(), key
        assert paper["period"] == 50 and paper["rank_factor"] == 0.125
        assert {k: paper[f"trainer.{k}"] for k in ("lr", "batch_size", "max_length", "epochs", "warmup_ratio", "grad_clip")} \
            == {"lr": 5e-5, "batch_size": 16, "max_length": 256, "epochs": 3, "warmup_ratio": 0.1, "grad_clip": 1.0}
        # every knob is settable by name, like --set losia.<key>=<value>
        cfg = dataclasses.replace(spec.default_config(), period=7, importance="param_first")
        assert (cfg.period, cfg.importance) == (7, "param_first")
    with pytest.raises(ValueError):
        LosiaConfig(importance="nope")
