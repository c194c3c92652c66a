"""LoSiA / LoSiA-Pro: equivalence, gradients, importance, greedy selection, schedule, accounting."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from harness.models import TINY_LLAMA_CONFIG, build_llama
from harness.runfolder import MethodFiles
from methods.base import MethodConfigError, TrainContext, warmup_cosine
from methods.losia import LosiaConfig, adapt, adapt_pro
from methods.losia.importance import ImportanceTracker, candidates, importance, relocalize
from methods.losia.layer import Subnet, SubnetLinear
from methods.losia.optimizer import SubnetAdamW

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


@pytest.mark.parametrize("compat", ["spec", "release"])
@pytest.mark.parametrize("dense_rest", [True, False])
def test_losia_and_pro_give_the_same_weights_over_two_relocalization_cycles(dense_rest: bool, compat: str) -> None:
    cfg = LosiaConfig(period=2, dense_rest=dense_rest, compat=compat)
    ctx = _ctx(weight_decay=0.1)
    plain, pro = _adapted(False, cfg, ctx), _adapted(True, dataclasses.replace(cfg), ctx)
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


# lr factors at steps 0..2T for T=2, W=2, N=5, min 0.5 and 3 slots (lm_head + 2 layers): slot 0 is
# re-selected after step 1 (r=2), slot 1 after step 3 (r=4), slot 2 not before step 5.
# envelope, cosine progress (s-W)/(N-W): s=2 -> 1, s=3 -> .5+.25*(1+cos(pi/3)) = .875, s=4 -> .625;
# warm-up (s+1)/W spec: .5, 1; s/W release: 0, .5.
_SPEC_ENV = [0.5, 1.0, 1.0, 0.875, 0.625]
_RELEASE_ENV = [0.0, 0.5, 1.0, 0.875, 0.625]
_LR_TABLES = {
    # spec: a restarted slot runs envelope * (s - r)/T from 0
    ("spec", None): [[0.5, 1.0, 0.0, 0.5 * 0.875, 0.625], [0.5, 1.0, 1.0, 0.875, 0.0], _SPEC_ENV, _SPEC_ENV],
    # cosine_restarts: (s - r)/T * envelope(r + W) = (s - 2)/2 * cos-part at 2/3 (.625) for slot 0
    ("release", None): [[0.0, 0.5, 0.0, 0.5 * 0.625, 0.625], [0.0, 0.5, 1.0, 0.875, 0.0], _RELEASE_ENV,
                        _RELEASE_ENV],
    # cosine: own cycle of L*T = 6 steps, warm-up c/T over T = 2, then cosine over 4 steps
    # (c=3: .5+.25*(1+cos(pi/4)) = .9267767, c=4: .75); 1e-7 on a restarted cycle's first 2 steps
    ("release", "cosine"): [[0.0, 0.5, 1e-7, 1e-7, 1.0], [0.0, 0.5, 1.0, 0.9267767, 1e-7],
                            [0.0, 0.5, 1.0, 0.9267767, 0.75], _RELEASE_ENV],
}


@pytest.mark.parametrize("compat,schedule", list(_LR_TABLES))
def test_lr_of_reselected_and_other_layers_at_steps_0_to_2T(compat: str, schedule: str | None) -> None:
    base = 1e-3
    cfg = LosiaConfig(period=2, min_lr_ratio=0.5, output_dim_factor=0.125, compat=compat, schedule=schedule)
    a = _adapted(True, cfg, _ctx(lr=base, total_steps=5, warmup_steps=2))
    groups = a.optimizer.param_groups
    assert [g["slot"] for g in groups] == [0, 1, 2, None]  # lm_head, layer 0, layer 1, dense
    table = _LR_TABLES[(compat, schedule)]
    for step in range(5):
        assert [g["lr"] for g in groups] == pytest.approx([base * col[step] for col in table], rel=1e-6, abs=1e-15)
        _train_step(a, step, [_batch(step)])
    assert [(r[0], r[1]) for r in a.reselections] == [(1, "lm_head")] + [(3, 0)] * 7
    assert a.current_lr() == pytest.approx(base * 0.5)  # the envelope at step 5 = N: its floor

    off = _adapted(True, dataclasses.replace(cfg, rewarm=False), _ctx(lr=base, total_steps=5, warmup_steps=2))
    for step in range(3):
        _train_step(off, step, [_batch(step)])
    assert off.scheduler.restarts == {} and len(off.reselections) == 1


def test_cosine_restarts_ramps_from_step_0_when_warmup_is_shorter_than_T() -> None:
    """The release treats 'no restart yet' as a restart at 0: with W < T, steps W..T-1 ramp as s/T."""
    a = _adapted(True, LosiaConfig(period=4, compat="release"), _ctx(lr=1.0, total_steps=100, warmup_steps=1))
    layer0 = a.optimizer.param_groups[0]
    lrs = []
    for step in range(5):
        lrs.append(layer0["lr"])
        a.scheduler.step()
    assert lrs == pytest.approx([0.0, 0.25, 0.5, 0.75, warmup_cosine(4, 1, 100, 0.1)])


def _tiny_subnet(grad: list[list[float]], weight: list[list[float]] | None = None) -> Subnet:
    """A 2x3 weight whose subnet is row 0, columns 1 and 2, with the given full gradient."""
    w = torch.nn.Parameter(torch.tensor(weight or [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    w.grad = torch.tensor(grad)
    return Subnet("w", 0, 0, w, torch.tensor([0]), torch.tensor([1, 2]), efficient=False)


def test_epsilon_placement_and_decay_order_by_hand() -> None:
    # step 1, g = 1e-5: spec  -lr g / (|g| + 1e-8)                  = -0.1 * 0.999000999
    #                   release -lr sqrt(1-b2) g / (sqrt(1-b2)|g| + 1e-6) = -0.1 * 1e-5 / (1e-5 + 1e-6/sqrt(1e-3))
    moved = {}
    for release in (False, True):
        s = _tiny_subnet([[9.0, 1e-5, 1.0], [9.0, 9.0, 9.0]])
        opt = SubnetAdamW([[s]], [], lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, release=release)
        opt.step()
        moved[release] = s.weight.detach().clone()
    assert moved[False][0, 1].item() == pytest.approx(-0.0999000999, rel=1e-6)
    assert moved[True][0, 1].item() == pytest.approx(-0.1 * 0.24025307, rel=1e-6)
    # g = 1: eps hardly matters under the spec; the release's acts as 1e-6 / sqrt(1e-3) = 3.2e-5
    assert moved[False][0, 2].item() == pytest.approx(-0.1, rel=1e-6)
    assert moved[True][0, 2].item() == pytest.approx(-0.1 / (1 + 1e-6 / math.sqrt(1e-3)), rel=1e-6)
    for w in moved.values():
        assert w[0, 0] == 0 and torch.all(w[1] == 0)  # only W[R, C] moves

    # weight decay 0.5, lr 0.1, theta 2, g 1 (update -0.1, up to the release's eps: 3e-6): block spec
    # 2*0.95 - 0.1 = 1.8, release (2 - 0.1)*0.95 = 1.805; dense spec AdamW 1.8, release Adam
    # g' = 1 + 0.5*2 -> 2 - 0.1 = 1.9
    for release, block, dense in ((False, 1.8, 1.8), (True, 1.805, 1.9)):
        s = _tiny_subnet([[0.0, 1.0, 1.0], [0.0, 0.0, 0.0]], [[2.0, 2.0, 2.0], [2.0, 2.0, 2.0]])
        p = torch.nn.Parameter(torch.tensor([2.0]))
        p.grad = torch.tensor([1.0])
        SubnetAdamW([[s]], [p], lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.5, release=release).step()
        assert s.weight[0, 1:].tolist() == pytest.approx([block, block], abs=1e-5)
        assert s.weight[0, 0].item() == 2.0 and p.item() == pytest.approx(dense, abs=1e-6)


def test_step_count_after_a_reset() -> None:
    counts = {}
    for release in (False, True):
        s = _tiny_subnet([[0.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
        opt = SubnetAdamW([[s]], [], lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, release=release)
        opt.step(); opt.step()
        opt.reset(s)
        counts[release] = dict(opt.state[s.weight])
        before = s.weight[0, 1].item()
        opt.step()
        counts[release]["update"] = s.weight[0, 1].item() - before
        counts[release]["after"] = opt.state[s.weight]["step"]
    assert counts[False] == {"update": pytest.approx(-0.1, rel=1e-6), "after": 1}  # state dropped: step 1 again
    # release: moments zeroed, step 3: -lr sqrt(1-b2^3)/(1-b1^3) (1-b1) g / (sqrt(1-b2) g + 1e-6)
    assert counts[True] == {"step": 2, "update": pytest.approx(-0.06387934, rel=1e-6), "after": 3}


@pytest.mark.parametrize("efficient", [False, True])
def test_importance_uses_the_weight_before_the_update(efficient: bool) -> None:
    cfg = LosiaConfig(period=2, importance="param_first", importance_beta1=0.5)
    a = _adapted(efficient, cfg, _ctx(lr=1e-2, warmup_steps=0))
    seen = {}

    def keep(a, step):
        seen.update({s.name: (s.weight.detach().clone(), s.full_grad().clone()) for s in a.slots[0]})

    _train_step(a, 0, [_batch(0)], check=keep)
    for s in a.slots[0]:
        theta, grad = seen[s.name]
        assert not torch.equal(s.weight, theta)  # the step did move the block
        i_bar = a.trackers[id(s)].i_bar
        torch.testing.assert_close(i_bar, 0.5 * (theta * grad).abs(), rtol=0, atol=0)
        assert not torch.equal(i_bar, 0.5 * (s.weight.detach() * grad).abs())


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
        assert paper["compat"] == "release"  # "paper" means "as the authors ran it"
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


def _init_file(tmp_path, model, shift: int = 0, **changes) -> str:
    """Every target's subnet: rows/cols counted down from the end (so they need sorting)."""
    given = {}
    for name, w in model.state_dict().items():
        if name.endswith("proj.weight"):
            d_out, d_in = w.shape
            given[name] = [list(range(d_out - 1, d_out - 1 - d_out // 8, -1)),
                           list(range(d_in - 1 - shift, d_in - 1 - shift - d_in // 8, -1))]
    given.update(changes)
    given = {k: v for k, v in given.items() if v is not None}
    path = tmp_path / "init.json"
    path.write_text(json.dumps(given))
    return str(path)


@pytest.mark.parametrize("name", ["losia", "losia-pro"])
def test_init_subnets_file_and_subnets_log(tmp_path, name: str) -> None:
    from methods import registry

    model = build_llama(TINY_LLAMA_CONFIG, seed=0)
    path = _init_file(tmp_path, model, shift=3)
    a = registry.get(name).adapt(model, LosiaConfig(period=2, init_subnets=path), _ctx(artifacts=MethodFiles(tmp_path)))
    given = json.loads(Path(path).read_text())
    assert len(given) == len(a.subnets) == 7 * N_LAYERS
    for s in a.subnets:
        rows, cols = given[s.name + ".weight"]
        assert s.rows.tolist() == sorted(rows) and s.cols.tolist() == sorted(cols)
    for step in range(4):
        _train_step(a, step, [_batch(step)])
    lines = [json.loads(line) for line in (tmp_path / "subnets.jsonl").read_text().splitlines()]
    # the initial selection at step 0, layer 0's from step 2, layer 1's from step 4
    assert [line["step"] for line in lines] == [0] * 14 + [2] * 7 + [4] * 7
    assert {line["weight"]: [line["rows"], line["cols"]] for line in lines[:14]} == \
        {k: [sorted(r), sorted(c)] for k, (r, c) in given.items()}
    assert [line["weight"] for line in lines[14:]] == [s.name + ".weight" for s in a.subnets]
    last = {line["weight"]: (line["rows"], line["cols"]) for line in lines}
    assert all(last[s.name + ".weight"] == (s.rows.tolist(), s.cols.tolist()) for s in a.subnets)


@pytest.mark.parametrize("change,message", [
    ({"model.layers.1.mlp.up_proj.weight": None}, "no subnet for target weight model.layers.1.mlp.up_proj.weight"),
    ({"model.layers.0.self_attn.k_proj.weight": [[0, 1, 2], [0, 1, 2, 3, 4, 5, 6, 7]]},
     "model.layers.0.self_attn.k_proj.weight: 3 rows, its subnet has 4"),
    ({"model.layers.0.self_attn.q_proj.weight": [[0, 1, 2, 3, 4, 5, 6, 64], [0, 1, 2, 3, 4, 5, 6, 7]]},
     "model.layers.0.self_attn.q_proj.weight: rows index 64 out of range \\[0, 64\\)"),
    ({"model.layers.0.self_attn.q_proj.weight": [[0, 1, 2, 3, 4, 5, 6, 7], [0, 1, 2, 3, 4, 5, 6, -1]]},
     "model.layers.0.self_attn.q_proj.weight: cols index -1 out of range"),
    ({"model.layers.0.self_attn.q_proj.weight": [[0, 0, 2, 3, 4, 5, 6, 7], [0, 1, 2, 3, 4, 5, 6, 7]]},
     "model.layers.0.self_attn.q_proj.weight: rows repeat an index"),
    ({"model.embed_tokens.weight": [[0], [0]]}, "model.embed_tokens.weight is not a target weight"),
    ({"model.layers.0.mlp.up_proj.weight": [[0, 1]]}, "model.layers.0.mlp.up_proj.weight: expected \\[rows, cols\\]"),
])
def test_bad_init_subnets_file_is_one_clear_line(tmp_path, change: dict, message: str) -> None:
    model = build_llama(TINY_LLAMA_CONFIG, seed=0)
    path = _init_file(tmp_path, model, **change)
    with pytest.raises(MethodConfigError, match=f"init_subnets {path}: {message}") as err:
        adapt_pro(model, LosiaConfig(init_subnets=path), _ctx())
    assert "\n" not in str(err.value)
    assert not any(isinstance(m, SubnetLinear) for m in model.modules())  # refused before touching the model
    with pytest.raises(MethodConfigError, match="no such file"):
        adapt(model, LosiaConfig(init_subnets=str(tmp_path / "missing.json")), _ctx())


def test_pro_siblings_share_one_input_gather(monkeypatch) -> None:
    """q, k, v (and gate, up) take their columns of x from one gather: 4 gathers per layer forward."""
    from methods.losia import layer

    a = _adapted(True)
    calls = []
    real = layer._columns
    monkeypatch.setattr(layer, "_columns", lambda t, index: calls.append(index.numel()) or real(t, index))
    a.before_step(0)  # layer 0 profiles (saves full inputs), layer 1 gathers
    loss = a.model(**_batch(0)).loss
    # layer 1: q|k|v 8+8+8 columns of x (64 wide), o 8, gate|up 8+8, down 16 (of 128)
    assert calls == [24, 8, 16, 16]
    loss.backward()
    assert len(calls) == 4 + 7  # plus one row gather of grad_out per matrix in backward


@pytest.mark.parametrize("name", ["losia", "losia-pro"])
@pytest.mark.parametrize("change,message", [
    ({"model.layers.1.mlp.up_proj.weight": None}, "no subnet for target weight"),
    ({"model.layers.0.self_attn.k_proj.weight": [[0, 1, 2], [0, 1, 2, 3, 4, 5, 6, 7]]}, "3 rows, its subnet has 4"),
    ({"model.layers.0.self_attn.q_proj.weight": [[0, 1, 2, 3, 4, 5, 6, 64], [0, 1, 2, 3, 4, 5, 6, 7]]},
     "rows index 64 out of range"),
])
def test_bad_init_subnets_fails_at_planning(tmp_path, capsys, name: str, change: dict, message: str) -> None:
    """`bench run` refuses the file before any run starts: one line, exit 2, no run folder, nothing
    evaluated (the check runs on a weightless skeleton of the model, not on a loaded one)."""
    from harness import cli

    path = _init_file(tmp_path, build_llama(TINY_LLAMA_CONFIG, seed=0), **change)
    code = cli.main(["run", "--methods", name, "--tasks", "synthetic", "--model", "tiny-llama", "--max-steps", "2",
                     "--executor", "inline", "--no-progress", "--set", f"{name}.init_subnets={path}",
                     "--out", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.startswith("bench: error:")]
    assert code == 2 and len(lines) == 1 and message in lines[0] and "Traceback" not in err, err
    assert not (tmp_path / "out" / "runs").exists() and "budget:" not in out


def test_good_init_subnets_passes_planning_on_the_skeleton(tmp_path) -> None:
    """The skeleton's weight names and shapes are the loaded model's, so a good file passes."""
    from harness import plan
    from harness.models import skeleton

    meta = skeleton("tiny-llama")
    assert all(p.is_meta for p in meta.parameters())
    assert {k: tuple(v.shape) for k, v in meta.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in build_llama(TINY_LLAMA_CONFIG).state_dict().items()}
    path = _init_file(tmp_path, build_llama(TINY_LLAMA_CONFIG, seed=0))
    plans = plan.runs(plan.Grid(model="tiny-llama", methods=("losia-pro",), tasks="synthetic",
                                overrides={"losia-pro.init_subnets": path}))
    plan.check_on_models(plans)  # no error
