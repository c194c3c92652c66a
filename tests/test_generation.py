"""The generation protocol: templates to the character, extraction, batched decoding, wiring."""
from __future__ import annotations

import json

import pytest

from harness import cli, records
from harness.config import RunConfig
from harness.models import TINY_LLAMA_CONFIG, ByteTokenizer, build_llama
from tasks import generation, llm_adapters, protocols, registry
from tasks.base import Example
from tasks.formatting import IGNORE_INDEX, TrainTarget, encode_train

SPEC_EVAL = ("Below is an instruction that describes a task. Write a response that appropriately completes the "
             "request. \n\n                ### Instruction:\n                {instruction}\n\n                "
             "### Response:\n                ")


def test_templates_to_the_character():
    assert llm_adapters.EVAL_TEMPLATE == SPEC_EVAL
    # the training copy: two spaces after "request." and a blank line of 16 spaces
    assert llm_adapters.TRAIN_TEMPLATE == SPEC_EVAL.replace("request. ", "request.  ").replace(
        "{instruction}\n\n", "{instruction}\n" + " " * 16 + "\n")
    ex = Example("x", "q", (), 0, instruction="Add 2 and 3.", output="5")
    assert llm_adapters.eval_prompt(ex).endswith("Add 2 and 3.\n\n                ### Response:\n" + " " * 16)
    assert "### Input:\n                more" in llm_adapters.eval_prompt(Example("x", "q", (), 0, instruction="i",
                                                                                     input="more"))


@pytest.mark.parametrize("text, vocab, want", [
    ("the correct answer is answer2, not answer1", ("answer1", "answer2"), "answer2"),
    ("True, the answer is false", ("true", "false"), "false"),  # case-sensitive: "True" is no match
    ("no label here", ("option1", "option2"), None),
    ("answer10 then answer1", ("answer1", "answer10"), "answer10"),  # longer label wins at a position
])
def test_choice_extraction_first_case_sensitive_occurrence(text, vocab, want):
    assert llm_adapters.extract_choice(text, vocab) == want


@pytest.mark.parametrize("text, want", [
    ("It costs 1,250 dollars, so 3/4 of it. The answer is 937.5.", 937.5),
    ("first 2 then -7", -7.0),
    ("half: 1/2", 0.5),
    ("3/0 is not a number but 4 is", 4.0),
    ("no digits", None),
])
def test_number_extraction_takes_the_last_number(text, want):
    assert llm_adapters.extract_number(text) == want


def test_numeric_match_and_response_cut():
    assert llm_adapters.numbers_match(576.0, "576.0") and llm_adapters.numbers_match(2 / 3, "0.6666666666666666")
    assert not llm_adapters.numbers_match(0.67, "0.6666666666666666") and not llm_adapters.numbers_match(None, "1")
    assert llm_adapters.response_text("  answer1 ### Response: answer2") == "answer1"
    assert llm_adapters.judge("choice", ("answer1", "answer2"), "answer2", " answer2\n### Response: answer1") == \
        ("answer2", True)


@pytest.fixture(scope="module")
def tiny():
    return build_llama(TINY_LLAMA_CONFIG, seed=0), ByteTokenizer()


def test_batched_left_padded_generation_equals_one_by_one(tiny):
    model, tok = tiny
    prompts = ["short", "a much longer prompt than the first one", "mid length prompt"]
    batched = generation.generate(model, tok, prompts, max_new_tokens=6, batch_size=3, progress=False)
    alone = [generation.generate(model, tok, [p], max_new_tokens=6, batch_size=1, progress=False)[0] for p in prompts]
    assert batched == alone
    beams = generation.generate(model, tok, prompts, max_new_tokens=4, num_beams=2, batch_size=2, progress=False)
    assert len(beams) == 3


def test_generation_training_text_trains_on_inputs_and_ends_with_eos():
    task = registry.get("synthetic")
    ex = registry.load(task).train[0]
    prompt, target = protocols.get("generate").train_pair(task, ex)
    assert prompt == llm_adapters.train_prompt(ex) and target == ex.output and isinstance(target, TrainTarget)
    tok = ByteTokenizer()
    ids, labels = encode_train(tok, prompt, target, max_length=512)
    assert ids[-1] == tok.eos_token_id and labels == ids and IGNORE_INDEX not in labels
    assert tok.decode(ids) == prompt + ex.output
    # the likelihood protocol keeps its own text: the gold request, loss on the target only
    assert protocols.get("likelihood").train_pair(task, ex) == task.requests(ex)[ex.gold]


def test_protocol_changes_the_run_id():
    base = dict(model="tiny-llama", method="lora", method_config={}, train_tasks=("synthetic",),
                eval_tasks=("synthetic",))
    ids = {RunConfig(**base, protocol=p, backend=b).run_id for p in ("likelihood", "generate")
           for b in ("native", "lm-eval")}
    assert len(ids) == 4


def test_auto_protocol_and_refusals():
    cs, math_task = registry.get("synthetic"), registry.get("gsm8k")
    assert protocols.resolve([cs], "auto") == "likelihood"
    assert protocols.resolve([math_task], "auto") == "generate"
    with pytest.raises(protocols.ProtocolError, match="no protocol fits"):
        protocols.resolve([math_task, _choice_only()], "auto")
    with pytest.raises(protocols.ProtocolError, match="has no likelihood protocol"):
        protocols.check(math_task, "likelihood", "native")


def _choice_only():
    from tasks.base import Task

    return Task("likelihood-only", "test", "", load=lambda: None, protocols=("likelihood",))


def test_generate_protocol_end_to_end(tmp_path):
    argv = ["run", "--model", "tiny-llama", "--tasks", "synthetic", "--methods", "lora", "--max-steps", "2",
            "--eval-limit", "4", "--executor", "inline", "--no-progress", "--protocol", "generate",
            "--set", "max_new_tokens=4", "--set", "eval_batch_size=4", "--out", str(tmp_path)]
    assert cli.main(argv) == 0
    run = next((tmp_path / "runs").iterdir())
    rec = json.loads((run / "run.json").read_text())
    assert rec["config"]["protocol"] == "generate"
    after = next(e for e in rec["evals"] if e["phase"] == "after")
    assert [m["name"] for m in after["metrics"]] == ["acc"] and after["prompt"].startswith("llm-adapters#")
    assert after["prompt"].endswith("greedy,4tok") and after["backend"] == "native"
    sample = records.read_jsonl(run / "samples" / "after" / "synthetic.jsonl")[0]
    assert {"generated", "pred", "gold", "correct"} <= set(sample) and sample["gold"] in ("positive", "negative")
    row = records.rebuild_table(tmp_path).query("metric == 'acc'").iloc[0]
    assert (row.protocol, row.backend, row.shots) == ("generate", "native", 0)


@pytest.mark.needs_data
def test_math_under_likelihood_is_a_one_line_error(tmp_path, capsys):
    argv = ["eval", "--model", "tiny-llama", "--tasks", "gsm8k", "--protocol", "likelihood", "--out", str(tmp_path)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "gsm8k has no likelihood protocol" in err and "\n" not in err
