"""Few-shot and chat-template prompts for our own tasks (tasks/prompting.py), on tiny models and the
file-free synthetic task; agreement with lm-eval's own construction is in test_lm_eval_bridge.py."""
from __future__ import annotations

import pytest

from harness.models import TINY_LLAMA_CONFIG, ByteTokenizer, build_llama
from tasks import prompting, protocols, registry, synthetic
from tasks.base import Example, Task, TaskData
from tasks.evaluation import EvalSettings, ProtocolError
from tests.factories import byte_bpe_tokenizer

CHAT = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}" \
       "{% if add_generation_prompt %}<|assistant|>{% endif %}"


@pytest.fixture(scope="module")
def model():
    return build_llama(TINY_LLAMA_CONFIG, seed=0)


@pytest.fixture(scope="module")
def chat_tokenizer():
    """A Hugging Face tokenizer with a chat template, built in memory (no download)."""
    tok = byte_bpe_tokenizer(["Review: good movie\nSentiment: positive negative"] * 10)
    tok.chat_template = CHAT
    return tok


def settings(**kw) -> EvalSettings:
    return EvalSettings(batch_size=8, progress=False, **kw)


def test_shots_come_from_the_train_split_drawn_in_item_order_with_a_fixed_seed():
    data = registry.load("synthetic")
    test = data.test[:6]
    shots = prompting.draw(data.train, test, 3, "synthetic")
    train_ids = {ex.id for ex in data.train}
    assert all(len(s) == 3 and {ex.id for ex in s} <= train_ids for s in shots)
    assert shots == prompting.draw(data.train, test, 3, "synthetic")  # fixed seed: the same every time
    assert prompting.draw(data.train, test[:2], 3, "synthetic") == shots[:2]  # --eval-limit keeps the draws
    assert shots != prompting.draw(data.train, test, 3, "synthetic", seed=prompting.FEWSHOT_SEED + 1)


def test_a_few_shot_request_is_the_gold_requests_then_the_item():
    task, data = registry.get("synthetic"), registry.load("synthetic")
    ex, shots = data.test[0], data.train[:2]
    requests = prompting.likelihood_requests(task, ex, shots, None, False)
    prefix = "".join(f"Review: {s.question}\nSentiment: {synthetic.LABELS[s.gold]}\n\n" for s in shots)
    assert requests == [(prefix + f"Review: {ex.question}\nSentiment:", " positive"),
                        (prefix + f"Review: {ex.question}\nSentiment:", " negative")]


def test_partial_scoring_few_shot_and_chat_follow_lm_evals_multiple_input_form(chat_tokenizer):
    """WinoGrande's form: the choice fills the blank in the context, the rest is scored."""
    def partial(ex: Example) -> list[tuple[str, str]]:
        i = ex.question.index("_")
        return [(ex.question[:i] + c, " " + ex.question[i + 1:].strip()) for c in ex.choices]

    task = Task("blank", "test", "", lambda: TaskData([], [], "", {}, ""), format_requests=partial, metrics=("acc",))
    shot = Example("train-0", "Ann beat Bo so _ won.", ("Ann", "Bo"), 0)
    ex = Example("test-0", "The cup is in the box so _ is bigger.", ("cup", "box"), 1)
    plain = prompting.likelihood_requests(task, ex, [shot], None, False)
    assert plain == [("Ann beat Bo so Ann won.\n\nThe cup is in the box so cup", " is bigger."),
                     ("Ann beat Bo so Ann won.\n\nThe cup is in the box so box", " is bigger.")]
    chat = prompting.likelihood_requests(task, ex, [shot], chat_tokenizer, True)
    assert chat[1] == ("<|user|>Ann beat Bo so Ann won.\n\nThe cup is in the box so box<|end|><|assistant|>",
                       "is bigger.")  # lm-eval drops the target delimiter after a chat turn


def test_generation_prompt_with_shots_and_chat(chat_tokenizer):
    from tasks.llm_adapters import eval_prompt

    data = registry.load("synthetic")
    ex, shot = data.test[0], data.train[0]
    text = prompting.generation_prompt(ex, [shot], None, False)
    assert text == eval_prompt(shot) + shot.output + "\n\n" + eval_prompt(ex)
    assert prompting.generation_prompt(ex, [shot], chat_tokenizer, True) == f"<|user|>{text}<|end|><|assistant|>"


def test_no_template_or_too_few_training_items_is_refused(chat_tokenizer):
    task, data = registry.get("synthetic"), registry.load("synthetic")
    with pytest.raises(ProtocolError, match="no chat template"):
        prompting.likelihood_requests(task, data.test[0], [], ByteTokenizer(), True)
    with pytest.raises(ProtocolError, match="needs 2 training examples.*no train split"):
        prompting.draw([], data.test[:1], 2, "bare")


@pytest.mark.parametrize("protocol", ["likelihood", "generate"])
def test_samples_carry_the_prompt_and_choices_or_answer_as_text(model, protocol):
    task, items = registry.get("synthetic"), registry.load("synthetic").test[:3]
    ev = protocols.evaluate("native", protocol, model, ByteTokenizer(), task, items,
                            settings(num_fewshot=2, max_new_tokens=4))
    assert ev.shots == 2 and not ev.chat_template
    shots = prompting.draw(registry.load("synthetic").train, items, 2, "synthetic")
    for sample, ex, s in zip(ev.samples, items, shots):
        if protocol == "likelihood":
            requests = prompting.likelihood_requests(task, ex, s, None, False)
            assert sample["prompt"] == requests[0][0] and sample["choices"] == [" positive", " negative"]
        else:
            assert sample["prompt"] == prompting.generation_prompt(ex, s, None, False)
            assert isinstance(sample["generated"], str)
    zero = protocols.evaluate("native", protocol, model, ByteTokenizer(), task, items, settings(max_new_tokens=4))
    assert zero.shots == 0 and zero.samples[0]["prompt"].startswith(("Review:", "Below is an instruction"))


def test_chat_template_scores_through_the_template(chat_tokenizer):
    import torch

    from harness.models import build_llama as build

    model = build({**TINY_LLAMA_CONFIG, "vocab_size": len(chat_tokenizer)}, seed=0)
    task, items = registry.get("synthetic"), registry.load("synthetic").test[:2]
    ev = protocols.evaluate("native", "likelihood", model, chat_tokenizer, task, items,
                            settings(apply_chat_template=True))
    assert ev.chat_template and ev.shots == 0
    assert ev.samples[0]["prompt"].startswith("<|user|>Review:") and ev.samples[0]["choices"] == ["positive", "negative"]
    assert all(torch.isfinite(torch.tensor(s["logliks"])).all() for s in ev.samples)


def test_the_lm_eval_backend_does_not_silently_drop_few_shot_for_our_tasks(model):
    with pytest.raises(ProtocolError, match="native backend"):
        protocols.evaluate("lm-eval", "likelihood", model, ByteTokenizer(), registry.get("synthetic"),
                           registry.load("synthetic").test[:1], settings(num_fewshot=1))


def test_bench_eval_records_shots_and_prompts(tmp_path, capsys):
    """End to end: ``bench eval --num-fewshot`` on our own task; the shots are in the eval summary
    and the before-eval cache key, the prompts in the samples."""
    import json

    from harness import cli

    argv = ["eval", "--model", "tiny-llama", "--tasks", "synthetic", "--eval-limit", "3", "--num-fewshot", "2",
            "--out", str(tmp_path), "--no-progress"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    run = next((tmp_path / "runs").iterdir())
    record = json.loads((run / "run.json").read_text())
    summary = next(e for e in record["evals"] if e["task"] == "synthetic")
    assert summary["shots"] == 2 and summary["chat_template"] is False
    sample = json.loads(next((run / "samples").rglob("synthetic.jsonl")).read_text().splitlines()[0])
    assert sample["prompt"].count("Sentiment:") == 3 and sample["choices"] == [" positive", " negative"]
