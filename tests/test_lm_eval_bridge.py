"""The lm-eval backend: exported YAML asks our requests, and per item lm-eval picks what we pick.

The agreement test runs a tiny random Llama whose vocabulary is a byte-level BPE trained in
memory on the items' text (lm-eval's HFLM needs a Hugging Face tokenizer), so it needs no
download and no real model; a few items of each commonsense task go through both backends.
"""
from __future__ import annotations

import pytest

from harness.models import build_llama
from tasks import agreement, lm_eval_bridge, protocols, registry, sources
from tasks.base import Example, Task, TaskData

SHARED = sources.resolve_data_dir()[0]  # the configured folder (tests/conftest.py)
pytestmark = pytest.mark.needs_data
N_ITEMS = 4
TASKS = registry.suites()["commonsense"]


@pytest.fixture(scope="module")
def items() -> dict[str, list[Example]]:
    """The first test items of each task."""
    return {name: registry.load(name).test[:N_ITEMS] for name in TASKS}


@pytest.fixture(scope="module")
def tiny(items):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [ctx + cont for name in TASKS for ex in items[name] for ctx, cont in registry.get(name).requests(ex)]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(corpus * 2, trainers.BpeTrainer(vocab_size=500, special_tokens=["<pad>", "<s>", "</s>"],
                                                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    model = build_llama(dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                             num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
                             tie_word_embeddings=False), seed=1)
    return model, tok


def settings(tmp_path, **kw) -> protocols.EvalSettings:
    return protocols.EvalSettings(batch_size=4, progress=False, workdir=tmp_path, **kw)


def test_native_scorer_picks_what_lm_eval_picks(tiny, items, tmp_path):
    model, tok = tiny
    jobs = [(registry.get(name), items[name]) for name in TASKS]
    everything = lm_eval_bridge.evaluate_many("likelihood", model, tok, jobs, settings(tmp_path))
    for (task, examples), theirs in zip(jobs, everything):
        ours = protocols.evaluate("native", "likelihood", model, tok, task, examples, settings(tmp_path))
        for a, b in zip(ours.samples, theirs.samples):
            assert a["id"] == b["id"] and a["pred"] == b["pred"], (task.name, a, b)
            assert a["logliks"] == pytest.approx(b["logliks"], abs=1e-3)
            if "pred_norm" in b:  # lm-eval has no acc_norm in the multiple-input (WinoGrande) form
                assert a["pred_norm"] == b["pred_norm"], (task.name, a, b)
        # lm-eval's own aggregate equals ours
        assert theirs.extra["lm_eval_reported"]["acc,none"] == pytest.approx(theirs.metrics[0]["value"])
        assert ours.prompt == theirs.prompt and theirs.protocol == "likelihood"


def test_generation_backends_generate_the_same_text(tiny, items, tmp_path):
    model, tok = tiny
    for name in ("arc_e", "boolq"):
        task = registry.get(name)
        kw = dict(max_new_tokens=5)
        ours = protocols.evaluate("native", "generate", model, tok, task, items[name][:2], settings(tmp_path, **kw))
        theirs = protocols.evaluate("lm-eval", "generate", model, tok, task, items[name][:2], settings(tmp_path, **kw))
        assert [s["generated"] for s in ours.samples] == [s["generated"] for s in theirs.samples]
        assert ours.prompt == theirs.prompt and ours.prompt.endswith("greedy,5tok")


def test_export_uses_multiple_input_form_for_partial_scoring(items, tmp_path):
    import yaml

    name, folder = lm_eval_bridge.export(registry.get("winogrande"), items["winogrande"], "likelihood",
                                         settings(tmp_path), tmp_path)
    config = yaml.safe_load((folder / f"{name}.yaml").read_text())
    assert (config["doc_to_text"], config["doc_to_choice"], config["doc_to_target"]) == ("gold", "contexts",
                                                                                          "continuation")
    assert config["target_delimiter"] == " " and config["dataset_path"] == "json"
    docs, fields = lm_eval_bridge.likelihood_docs(registry.get("arc_e"), items["arc_e"])
    assert fields["doc_to_choice"] == "choices" and docs[0]["choices"][0] == items["arc_e"][0].choices[0]
    gen, folder = lm_eval_bridge.export(registry.get("boolq"), items["boolq"], "generate", settings(tmp_path),
                                        tmp_path)
    text = (folder / f"{gen}.yaml").read_text()
    assert "process_results: !function peft_bench_lm_eval.process_generation" in text
    assert (folder / "peft_bench_lm_eval.py").is_file()


def test_batch_size_reaches_hflm(tiny):
    model, tok = tiny
    assert lm_eval_bridge._hflm(model, tok, 7).batch_size == 7


def test_refusals():
    from harness.models import ByteTokenizer

    with pytest.raises(protocols.ProtocolError, match="Hugging Face tokenizer"):
        lm_eval_bridge._hflm(None, ByteTokenizer(), 4)
    named = registry.get("lm-eval:hellaswag")
    assert named.family == "lm-eval"
    for backend in protocols.BACKENDS:  # an lm-eval task needs no --eval-backend: lm-eval evaluates it
        protocols.check(named, "likelihood", backend)
        assert protocols.backend_for(named, backend) == "lm-eval"
    assert protocols.backend_for(registry.get("arc_e"), "native") == "native"
    mixed = Task("mixed", "test", "", load=lambda: TaskData([], [], "", {}, ""),
                 format_requests=lambda ex: [("a", " x"), ("b", " y"), ("b", " z")])
    with pytest.raises(protocols.ProtocolError, match="multiple_choice cannot"):
        lm_eval_bridge.likelihood_docs(mixed, [Example("0", "q", ("x", "y", "z"), 0)])


def test_named_lm_eval_task_runs_offline(tiny, items, tmp_path, monkeypatch):
    """``lm-eval:NAME`` goes through lm-eval's own task index; here one holding an exported task."""
    from lm_eval.tasks import TaskManager

    model, tok = tiny
    name, folder = lm_eval_bridge.export(registry.get("arc_e"), items["arc_e"], "likelihood", settings(tmp_path),
                                         tmp_path)
    monkeypatch.setattr(lm_eval_bridge, "_task_manager",
                        lambda: TaskManager(include_path=str(folder), include_defaults=False))
    task = lm_eval_bridge.make_task(name)
    data = task.load()
    assert data.test == [] and list(data.checksums) == [f"lm-eval:{name}"]
    ev = protocols.evaluate("lm-eval", "likelihood", model, tok, task, [], settings(tmp_path, limit=2))
    assert [m["name"] for m in ev.metrics] == ["acc", "acc_norm"] and ev.metrics[0]["n"] == 2
    assert ev.protocol == "likelihood" and ev.prompt.startswith(f"lm-eval:{name}#") and len(ev.samples) == 2
    with pytest.raises(registry.UnknownTask, match="no task 'nosuch'"):
        lm_eval_bridge.make_task("nosuch").load()


@pytest.mark.slow  # builds lm-eval's own task objects for two tasks (~16 s)
def test_our_requests_are_lm_evals_own_task_definitions(tiny):
    """lm-eval's own YAML (arc_challenge; hellaswag with its process_docs) over our local items asks
    exactly our requests, and lm-eval running it on a tiny Llama picks what our native scorer picks."""
    names = ["arc_c", "hellaswag"]
    for name in names:
        same, n, diffs = agreement.request_agreement(name, registry.load(name).test[:25])
        assert same == n == 25, diffs
    model, tok = tiny
    assert agreement.choice_agreement(model, tok, names, 6, batch_size=4) == {"arc_c": (6, 6), "hellaswag": (6, 6)}


def test_lm_eval_docs_rebuild_each_tasks_hub_row_from_the_raw_strings(items):
    docs = {name: agreement.raw_docs(name, items[name][:1])[0] for name in TASKS}
    assert docs["siqa"]["context"] == "Tracy didn't go home that evening and resisted Riley's attacks."
    assert docs["siqa"]["question"] == "What does Tracy need to do before this?" and docs["siqa"]["label"] == "3"
    assert docs["boolq"] == {"passage": "", "question": "does ethanol take more energy make that produces", "label": 0}
    assert docs["hellaswag"]["ctx_b"] == "he" and docs["arc_e"]["answerKey"] == "A"
    assert docs["winogrande"] == {"sentence": items["winogrande"][0].question, "option1": "Sarah", "option2": "Maria",
                                  "answer": "2"}


def test_few_shot_and_chat_requests_equal_lm_evals_own(tiny):
    """--num-fewshot and --apply-chat-template on our tasks: lm-eval's own YAML, few-shot examples
    drawn by its sampler from the same train split (its default seed), asks exactly what
    tasks.prompting builds: the same examples, delimiters and chat rendering (WinoGrande's
    multiple-input form included)."""
    _, tok = tiny
    tok.chat_template = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}" \
                        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    try:
        for name in ("arc_e", "winogrande", "boolq"):
            test = registry.load(name).test[:12]
            assert agreement.request_agreement(name, test, num_fewshot=3)[:2] == (12, 12), name
            same, n, diffs = agreement.request_agreement(name, test, num_fewshot=2, chat_tokenizer=tok)
            assert same == n == 12, diffs
    finally:
        tok.chat_template = None


def test_each_task_publishes_the_metrics_lm_evals_task_publishes():
    for name in agreement.LM_EVAL_TASKS:
        assert registry.get(name).metrics == agreement.lm_eval_metrics(name), name


def test_a_raw_instruction_off_its_layout_is_refused():
    header = "Please choose the correct solution to the question: "
    good = f"{header}goal\n\nSolution1: a \n\nSolution2: b\n\nAnswer format: solution1/solution2"
    assert agreement.split_instruction("piqa", good, header) == ("goal", ["a ", "b"], ["solution1", "solution2"])
    with pytest.raises(ValueError, match="layout"):
        agreement.split_instruction("piqa", good.replace("\n\nSolution2", " Solution2"), header)


def test_piqa_requests_equal_lm_evals_on_every_item_from_the_raw_strings():
    """All 1287 PIQA test items: lm-eval's own piqa YAML over the data file's raw strings asks exactly
    our requests (trailing spaces of a solution are its text: the parse cuts only separators)."""
    test = registry.load("piqa").test
    same, n, diffs = agreement.request_agreement("piqa", test)
    assert (same, n) == (1287, 1287), diffs
    assert sum(ex.choices[0].endswith(" ") or ex.choices[1].endswith(" ") for ex in test) == 84


def _named(items, tmp_path, monkeypatch) -> Task:
    """An lm-eval:NAME task from an lm-eval task index holding one exported task."""
    from lm_eval.tasks import TaskManager

    name, folder = lm_eval_bridge.export(registry.get("arc_e"), items["arc_e"], "likelihood", settings(tmp_path),
                                         tmp_path)
    monkeypatch.setattr(lm_eval_bridge, "_task_manager",
                        lambda: TaskManager(include_path=str(folder), include_defaults=False))
    return lm_eval_bridge.make_task(name)


def test_named_task_under_the_native_backend_with_fewshot_and_chat_template(tiny, items, tmp_path, monkeypatch):
    model, tok = tiny
    tok.chat_template = "{% for m in messages %}<s>{{ m['content'] }}</s>{% endfor %}"
    task = _named(items, tmp_path, monkeypatch)
    ev = protocols.evaluate("native", "likelihood", model, tok, task, [],
                            settings(tmp_path, limit=2, num_fewshot=1, apply_chat_template=True))
    assert ev.shots == 1 and ev.chat_template and ev.metrics[0]["n"] == 2
    plain = protocols.evaluate("native", "likelihood", model, tok, task, [], settings(tmp_path, limit=2))
    assert plain.shots == 0 and not plain.chat_template


def test_named_task_without_its_data_fails_in_one_line(items, tmp_path, monkeypatch):
    task = _named(items, tmp_path, monkeypatch)
    for data in tmp_path.rglob("peftbench_*.jsonl"):
        data.unlink()  # as if lm-eval's data were neither cached nor reachable
    with pytest.raises(sources.DataError, match=r"^lm-eval:peftbench_\S+: its data could not be loaded") as err:
        task.load()
    assert "\n" not in str(err.value)
