"""The batched scorer against a plain one-request-at-a-time computation, and training encoding."""
from __future__ import annotations

import math

import pytest
import torch

from harness.models import TINY_LLAMA_CONFIG, ByteTokenizer, build_llama
from tasks import likelihood
from tasks.base import Example, Task, TaskData
from tasks.formatting import IGNORE_INDEX, encode_pair, encode_train
from tests.factories import byte_bpe_tokenizer


@pytest.fixture(scope="module")
def model():
    return build_llama(TINY_LLAMA_CONFIG, seed=0)


@pytest.fixture(scope="module")
def hf_tokenizer():
    """A small byte-level BPE built in memory: exercises the Hugging Face tokenizer path offline."""
    return byte_bpe_tokenizer(["Question: what is the answer?\nAnswer: yes no maybe",
                               "the cat sat on the mat with a hat"] * 20)


def reference(model, tokenizer, context: str, continuation: str, max_length: int) -> float:
    """lm-eval's recipe, one request at a time, full log-softmax, no batching or sharing."""
    n = len(context) - len(context.rstrip())
    if n:
        context, continuation = context[:-n], context[-n:] + continuation
    ctx = tokenizer.encode(context)
    cont = tokenizer.encode(context + continuation)[len(ctx):]
    window = (ctx + cont)[-(max_length + 1):]
    with torch.no_grad():
        logp = model(torch.tensor([window[:-1]])).logits[0].log_softmax(-1)
    first = len(window) - 1 - len(cont)
    return sum(logp[first + j, t].item() for j, t in enumerate(cont))


REQUESTS = [
    ("Question: what is 2+2?\nAnswer:", " four"),
    ("Question: what is 2+2?\nAnswer:", " five hundred and six"),
    ("Question: what is 2+2?\nAnswer:", " 4"),
    ("Question: what is 2+2?\nAnswer:", "!"),  # one token: scored from the context's last position
    ("Trailing space ", "moves"),
    ("Short", " yz"),
    ("A much longer context that goes on and on for quite a while, padding the others. ", "end"),
    ("ctx", " é ü ß"),
    ("", "empty context"),
]


@pytest.mark.parametrize("share", [True, False])
@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_matches_unbatched_reference(model, share, batch_size):
    tok = ByteTokenizer()
    got = likelihood.loglikelihoods(model, tok, REQUESTS, batch_size=batch_size, share_prefix=share, progress=False)
    want = [reference(model, tok, c, k, 256) if c else None for c, k in REQUESTS]
    for g, w, req in zip(got, want, REQUESTS):
        if w is not None:
            assert g == pytest.approx(w, abs=1e-4), req
    # empty context: conditioned on the BOS token, as lm-eval does
    with torch.no_grad():
        ids = [1] + tok.encode("empty context")
        logp = model(torch.tensor([ids[:-1]])).logits[0].log_softmax(-1)
    assert got[-1] == pytest.approx(sum(logp[j, t].item() for j, t in enumerate(ids[1:])), abs=1e-4)


def test_scored_token_budget_splits_batches(model, monkeypatch):
    rows = [likelihood.Row([1], [(0, [5, 6, 7])]), likelihood.Row([1], [(1, [5]), (2, [6])]), likelihood.Row([2], [(3, [9])])]
    assert [len(b) for b in likelihood.batches(rows, 64, 4)] == [1, 2]
    assert [len(b) for b in likelihood.batches(rows, 2, 100)] == [2, 1]
    monkeypatch.setattr(likelihood, "LOGITS_BUDGET", 512 * 3)  # 3 scored tokens per forward
    tok = ByteTokenizer()
    got = likelihood.loglikelihoods(model, tok, REQUESTS[:-1], progress=False)
    assert got == pytest.approx([reference(model, tok, c, k, 256) for c, k in REQUESTS[:-1]], abs=1e-4)


def test_left_truncation_matches_reference(model):
    tok = ByteTokenizer()
    reqs = [("x" * 40 + " long context", " a b"), ("x" * 40 + " long context", " c"), ("short", " end")]
    got = likelihood.loglikelihoods(model, tok, reqs, max_length=16, progress=False)
    assert got == pytest.approx([reference(model, tok, c, k, 16) for c, k in reqs], abs=1e-4)


def test_hf_tokenizer_path(model, hf_tokenizer):
    reqs = [("Question: the cat?\nAnswer: ", "yes"), ("Question: the cat?\nAnswer:", " no"), ("the mat", " with a hat")]
    got = likelihood.loglikelihoods(model, hf_tokenizer, reqs, batch_size=2, progress=False)
    assert got == pytest.approx([reference(model, hf_tokenizer, c, k, 256) for c, k in reqs], abs=1e-4)


def test_model_mode_restored_and_dropout_off(model):
    model.train()
    try:
        a = likelihood.loglikelihoods(model, ByteTokenizer(), REQUESTS[:3], progress=False)
        assert model.training
    finally:
        model.eval()
    assert a == likelihood.loglikelihoods(model, ByteTokenizer(), REQUESTS[:3], progress=False)


def make_task(examples: list[Example]) -> Task:
    return Task("toy", "test", "toy task", load=lambda: TaskData([], examples, "memory", {}, "test only"))


def test_score_records(model):
    exs = [Example(f"test-{i}", q, ("red", "green", "a blue one"), i % 3) for i, q in enumerate(["sky?", "grass?", "x"])]
    task = make_task(exs)
    recs = likelihood.score(model, ByteTokenizer(), task, exs, batch_size=2, progress=False)
    for ex, r in zip(exs, recs):
        lls = [reference(model, ByteTokenizer(), c, k, 256) for c, k in task.requests(ex)]
        assert r["id"] == ex.id and r["gold"] == ex.gold and r["logliks"] == pytest.approx(lls, abs=1e-4)
        assert r["lengths"] == [3, 5, 10]
        assert r["pred"] == max(range(3), key=lls.__getitem__) and r["correct"] == (r["pred"] == ex.gold)


def test_acc_norm_divides_by_characters(monkeypatch, model):
    # chars: -4/2 = -2.0 beats -15/6 = -2.5; bytes (12 for the second) or byte tokens would pick choice 1
    ex = Example("test-0", "q", ("ab", "éééééé"), 0)
    monkeypatch.setattr(likelihood, "loglikelihoods", lambda *a, **k: [-4.0, -15.0])
    (rec,) = likelihood.score(model, ByteTokenizer(), make_task([ex]), [ex], progress=False)
    assert rec["lengths"] == [2, 6] and rec["pred_norm"] == 0 and rec["correct_norm"]


def test_accuracy_stderr():
    recs = [{"correct": c} for c in [True, True, False, True]]
    acc, se, n = likelihood.accuracy(recs)
    assert (acc, n) == (0.75, 4) and se == pytest.approx(math.sqrt(0.75 * 0.25 / 3))
    assert math.isnan(likelihood.accuracy([])[0])


# --- training encoding --------------------------------------------------------------------------

def test_encode_train_masks_prompt_and_matches_scoring_split():
    tok = ByteTokenizer()
    ids, labels = encode_train(tok, "Question: q\nAnswer: ", "yes", max_length=64)
    ctx, cont = encode_pair(tok, "Question: q\nAnswer: ", "yes")
    assert ids == ctx + cont and tok.decode(cont) == " yes"  # the trailing space went to the target
    assert labels == [IGNORE_INDEX] * len(ctx) + cont
    ids2, labels2 = encode_train(tok, "Question: q\nAnswer: ", "yes", max_length=64, train_on_inputs=True)
    assert ids2 == labels2 == ids


def test_encode_train_truncates_prompt_from_left_and_adds_eos():
    tok = ByteTokenizer()
    ids, labels = encode_train(tok, "0123456789", " target", max_length=10, add_eos=True)
    assert len(ids) == 10 and tok.decode(ids) == "89 target" and ids[-1] == tok.eos_token_id
    assert labels[:2] == [IGNORE_INDEX] * 2 and labels[2:] == ids[2:]
    ids, labels = encode_train(tok, "prompt", " a very long target", max_length=5)
    assert tok.decode(ids) == " a ve" and labels == ids
    # a prompt that fits is kept whole, also when it is longer than half the room
    ids, _ = encode_train(tok, "0123456789", " t", max_length=14)
    assert tok.decode(ids) == "0123456789 t"
