"""Agreement with lm-evaluation-harness's own task definitions, item by item, offline.

lm-eval's tasks (``arc_easy``, ``hellaswag``, ...) load their data from the hub, which this
machine cannot reach. So the raw records of the offline data files are written back into the
hub rows each lm-eval task expects (``hub_row``), lm-eval's own task YAML (its ``doc_to_text`` /
``doc_to_choice`` / ``doc_to_target`` and ``process_docs``) is built over them, unchanged but
for the data source, and what it asks is compared with what we ask:

* ``request_agreement``: items whose (context, continuation) pairs equal ours exactly; no model;
* ``choice_agreement``: items where lm-eval's own task, run by lm-eval on a model (``HFLM``),
  picks the same answer as our native scorer on our task.

The hub rows come from the file's raw strings, never from our parse (``tasks.configured``):
each LLM-Adapters instruction is matched whole against the layout LLM-Adapters wrote it in
(``LAYOUTS``), so a parse that loses or adds a character shows up here as a disagreement.
HellaSwag is compared on the raw rows read from its text file, so lm-eval's ``process_docs``
(not our copy of it) makes its text. The model is passed in: loading one is the harness's
business (``python -m harness.agreement``).
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any, Sequence

from tasks import configured, lm_eval_bridge, prompting, protocols, registry, sources
from tasks.base import Example

# our task -> (lm-eval's task, its YAML inside lm_eval/tasks)
LM_EVAL_TASKS = {"boolq": ("boolq", "super_glue/boolq/default.yaml"), "piqa": ("piqa", "piqa/piqa.yaml"),
                 "siqa": ("social_iqa", "siqa/siqa.yaml"), "hellaswag": ("hellaswag", "hellaswag/hellaswag.yaml"),
                 "winogrande": ("winogrande", "winogrande/default.yaml"), "arc_e": ("arc_easy", "arc/arc_easy.yaml"),
                 "arc_c": ("arc_challenge", "arc/arc_challenge.yaml"), "obqa": ("openbookqa", "openbookqa/openbookqa.yaml")}
LETTERS = "ABCDEFGHIJ"
# How LLM-Adapters laid out each task's instruction after its opening sentence: (option label,
# what precedes the first option, what separates options, what follows the last one).
# BoolQ lists no options.
LAYOUTS = {"piqa": ("Solution", "\n\n", "\n\n", "\n\n"), "winogrande": ("Option", "\n\n", " ", " "),
           "siqa": ("Answer", "\n\n", " ", "\n\n"), "arc_e": ("Answer", "\n\n", " ", "\n\n"),
           "arc_c": ("Answer", "\n\n", " ", "\n\n"), "obqa": ("Answer", "\n\n", " ", "\n\n"),
           "boolq": ("", "", "", "\n\n")}


def split_instruction(name: str, instruction: str, header: str) -> tuple[str, list[str], list[str]]:
    """(question, options, answer labels) of a raw LLM-Adapters instruction, by matching the whole
    string against the task's layout; ValueError when it does not fit exactly."""
    label, first, between, last = LAYOUTS[name]
    formats = instruction.rpartition("Answer format: ")[2]
    labels = formats.split("/")
    names = [] if name == "boolq" else [f"{label}{k}: " for k in range(1, len(labels) + 1)]
    pattern = re.escape(header) + "(.*?)"
    for k, opt in enumerate(names):
        pattern += re.escape((first if k == 0 else between) + opt) + "(.*?)"
    pattern += re.escape(last + "Answer format: " + formats)
    found = re.fullmatch(pattern, instruction, re.S)
    if not found:
        raise ValueError(f"{name}: instruction does not have LLM-Adapters' layout: {instruction[:80]!r}")
    return found.group(1), list(found.groups()[1:]), labels


def _split_siqa(text: str) -> tuple[str, str]:
    """LLM-Adapters joined SIQA's context and question with one space; cut before the question
    (lm-eval joins them again with one space, so where the cut falls cannot change its text)."""
    cut = max(text.rfind(". "), text.rfind("! "), text.rfind("? ", 0, len(text) - 1))
    return (text[:cut + 1], text[cut + 2:]) if cut > 0 else ("", text)


def hub_row(name: str, record: dict[str, Any], header: str) -> dict[str, Any]:
    """A raw LLM-Adapters record as the hub row lm-eval's task reads."""
    question, options, labels = split_instruction(name, record["instruction"], header)
    gold = labels.index(record["answer"].strip())
    choices = {"text": options, "label": list(LETTERS[:len(options)])}
    if name in ("arc_e", "arc_c"):
        return {"question": question, "choices": choices, "answerKey": LETTERS[gold]}
    if name == "obqa":
        return {"question_stem": question, "choices": choices, "answerKey": LETTERS[gold]}
    if name == "piqa":
        return {"goal": question, "sol1": options[0], "sol2": options[1], "label": gold}
    if name == "siqa":
        context, asked = _split_siqa(question)
        return {"context": context, "question": asked, "answerA": options[0], "answerB": options[1],
                "answerC": options[2], "label": str(gold + 1)}
    if name == "winogrande":
        return {"sentence": question, "option1": options[0], "option2": options[1], "answer": str(gold + 1)}
    if name == "boolq":  # LLM-Adapters' BoolQ has no passage; lm-eval adds the "?" itself
        return {"passage": "", "question": question.removesuffix("?"), "label": int(record["answer"] == "true")}
    raise KeyError(f"no lm-eval definition to compare {name} with; comparable: {', '.join(LM_EVAL_TASKS)}")


def raw_docs(name: str, examples: Sequence[Example]) -> list[dict[str, Any]]:
    """The hub rows lm-eval's task reads for ``examples``, from the raw strings of the data file
    each came from (an id is ``test-<index>`` or ``train-<index>`` in the task's test or train
    file; carved training items keep their test-file ids): HellaSwag's rows as its text file
    gives them, every other task's through ``hub_row``."""
    spec = registry.spec(name)
    assert spec is not None, f"{name} has no task file"
    source = sources.current()
    rows: dict[str, list[dict[str, Any]]] = {}
    out = []
    for ex in examples:
        split, _, index = ex.id.rpartition("-")
        if split not in rows:
            ref = spec.test if split == "test" else spec.train
            path = configured.data_path(spec.base_dir(source.root), ref.path, source, ref.sha256)
            if name == "hellaswag":
                rows[split] = [{**row, "endings": list(row["endings"])} for row in configured.read_hellaswag_text(path)]
            else:
                records = json.loads(Path(path).read_text(encoding="utf-8"))
                rows[split] = [hub_row(name, rec, spec.data_header) for rec in records]
        out.append(rows[split][int(index)])
    return out


def lm_eval_task(name: str, docs: list[dict[str, Any]], train_docs: list[dict[str, Any]] | None = None,
                 num_fewshot: int = 0) -> Any:
    """lm-eval's own task for ``name`` (its YAML, includes and functions), over ``docs``; with
    ``num_fewshot``, its few-shot examples drawn from ``train_docs`` (its training split) with
    lm-eval's default seed."""
    import datasets
    from lm_eval.api.task import ConfigurableTask

    logging.getLogger("lm_eval").setLevel(logging.ERROR)  # it warns that custom_dataset takes kwargs
    datasets.disable_progress_bars()
    config = _lm_eval_yaml(name)
    config.pop("tag", None)
    splits = {"test": datasets.Dataset.from_list(docs)}
    if train_docs:
        splits["train"] = datasets.Dataset.from_list(train_docs)
    config.update(dataset_path=None, dataset_name=None, dataset_kwargs=None, test_split="test",
                  validation_split=None, training_split="train" if train_docs else None, fewshot_split=None,
                  num_fewshot=num_fewshot, custom_dataset=lambda **_: datasets.DatasetDict(splits))
    task = ConfigurableTask(config=config)
    task.set_fewshot_seed(prompting.FEWSHOT_SEED)
    return task


def lm_eval_metrics(name: str) -> tuple[str, ...]:
    """The metrics lm-eval's own task for ``name`` publishes (its YAML's ``metric_list``)."""
    return tuple(m["metric"] for m in _lm_eval_yaml(name)["metric_list"])


def _lm_eval_yaml(name: str) -> dict[str, Any]:
    """lm-eval's own task YAML for ``name``, as installed (includes and ``!function`` resolved)."""
    import lm_eval.tasks
    from lm_eval.tasks._yaml_loader import load_yaml

    return load_yaml(Path(lm_eval.tasks.__file__).parent / LM_EVAL_TASKS[name][1])


def lm_eval_requests(task: Any, tokenizer: Any = None) -> list[list[tuple[str, str]]]:
    """The (context, continuation) pairs lm-eval's task asks, per document, in choice order;
    with ``tokenizer``, through its chat template as lm-eval's ``--apply_chat_template`` does."""
    def chat(messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)

    task.build_all_requests(limit=None, rank=0, world_size=1, apply_chat_template=tokenizer is not None,
                            chat_template=chat if tokenizer is not None else None)
    per_doc: dict[int, list[tuple[int, tuple[str, str]]]] = {}
    for inst in task.instances:
        per_doc.setdefault(inst.doc_id, []).append((inst.idx, tuple(inst.arguments)))
    return [[args for _, args in sorted(per_doc[i])] for i in range(len(per_doc))]


def request_agreement(name: str, examples: Sequence[Example], num_fewshot: int = 0, chat_tokenizer: Any = None
                      ) -> tuple[int, int, list[str]]:
    """(items whose requests equal lm-eval's own, items, first differences) for one task; with
    ``num_fewshot`` examples from the train split (ours: ``tasks.prompting``) and, with
    ``chat_tokenizer``, through its chat template."""
    task = registry.get(name)
    train = registry.load(name).train if num_fewshot else []
    shots = prompting.draw(train, examples, num_fewshot, name)
    ours = [prompting.likelihood_requests(task, ex, s, chat_tokenizer, chat_tokenizer is not None)
            for ex, s in zip(examples, shots)]
    lm_task = lm_eval_task(name, raw_docs(name, examples), raw_docs(name, train) if train else None, num_fewshot)
    theirs = lm_eval_requests(lm_task, chat_tokenizer)
    diffs = [f"{name} {ex.id}: ours {mine[0]!r} lm-eval {reqs[0]!r}"
             for ex, mine, reqs in zip(examples, ours, theirs) if mine != reqs]
    return len(examples) - len(diffs), len(examples), diffs[:3]


def choice_agreement(model: Any, tokenizer: Any, names: Sequence[str], limit: int, batch_size: int = 16
                     ) -> dict[str, tuple[int, int]]:
    """Task -> (items where lm-eval's own task, run by lm-eval, picks our native choice, items)."""
    jobs = [(registry.get(n), registry.load(n).test[:limit]) for n in names]
    lm_tasks = {}
    for task, items in jobs:
        lm_tasks[task.name] = lm_eval_task(task.name, raw_docs(task.name, items))
    settings = protocols.EvalSettings(batch_size=batch_size, progress=False)
    out = lm_eval_bridge.run_lm_eval(model, tokenizer, list(lm_tasks.values()), None, settings)
    result = {}
    for task, items in jobs:
        ours = protocols.evaluate("native", "likelihood", model, tokenizer, task, items, settings).samples
        samples = {s["doc_id"]: s for s in out["samples"][LM_EVAL_TASKS[task.name][0]]}
        theirs = [_argmax([float(r[0]) for r in samples[i]["filtered_resps"]]) for i in range(len(items))]
        result[task.name] = (sum(a["pred"] == b for a, b in zip(ours, theirs)), len(items))
    return result


def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)


def task_names(spec: str) -> list[str]:
    names = registry.expand(spec)
    unknown = [n for n in names if n not in LM_EVAL_TASKS]
    if unknown:
        raise KeyError(f"no lm-eval definition to compare {', '.join(unknown)} with; comparable: "
                       f"{', '.join(LM_EVAL_TASKS)}")
    return names

