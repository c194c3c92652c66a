"""Agreement with lm-evaluation-harness's own task definitions, item by item, offline.

lm-eval's tasks (``arc_easy``, ``hellaswag``, ...) load their data from the hub, which this
machine cannot reach. So our local items are written back into the hub rows each lm-eval task
expects (``lm_eval_doc``), lm-eval's own task YAML (its ``doc_to_text`` / ``doc_to_choice`` /
``doc_to_target`` and ``process_docs``) is built over them, unchanged but for the data source,
and what it asks is compared with what we ask:

* ``request_agreement``: items whose (context, continuation) pairs equal ours exactly; no model;
* ``choice_agreement``: items where lm-eval's own task, run by lm-eval on a model (``HFLM``),
  picks the same answer as our native scorer on our task.

HellaSwag is compared on the raw rows our reader recovers from the offline file, so lm-eval's
``process_docs`` (not our copy of it) makes its text. The model is passed in: loading one is the
harness's business (``python -m harness.agreement``).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from tasks import configured, lm_eval_bridge, protocols, registry, sources
from tasks.base import Example

# our task -> (lm-eval's task, its YAML inside lm_eval/tasks)
LM_EVAL_TASKS = {"boolq": ("boolq", "super_glue/boolq/default.yaml"), "piqa": ("piqa", "piqa/piqa.yaml"),
                 "siqa": ("social_iqa", "siqa/siqa.yaml"), "hellaswag": ("hellaswag", "hellaswag/hellaswag.yaml"),
                 "winogrande": ("winogrande", "winogrande/default.yaml"), "arc_e": ("arc_easy", "arc/arc_easy.yaml"),
                 "arc_c": ("arc_challenge", "arc/arc_challenge.yaml"), "obqa": ("openbookqa", "openbookqa/openbookqa.yaml")}
LETTERS = "ABCDEFGHIJ"


def _split_siqa(text: str) -> tuple[str, str]:
    """LLM-Adapters joined SIQA's context and question with one space; cut before the question."""
    cut = max(text.rfind(". "), text.rfind("! "), text.rfind("? ", 0, len(text) - 1))
    return (text[:cut + 1], text[cut + 2:]) if cut > 0 else ("", text)


def lm_eval_doc(name: str, ex: Example, raw: dict[str, Any] | None = None) -> dict[str, Any]:
    """Our item as the hub row lm-eval's task reads (HellaSwag: the raw row our reader recovered)."""
    choices = {"text": list(ex.choices), "label": list(LETTERS[:len(ex.choices)])}
    if name in ("arc_e", "arc_c"):
        return {"question": ex.question, "choices": choices, "answerKey": LETTERS[ex.gold]}
    if name == "obqa":
        return {"question_stem": ex.question, "choices": choices, "answerKey": LETTERS[ex.gold]}
    if name == "piqa":
        return {"goal": ex.question, "sol1": ex.choices[0], "sol2": ex.choices[1], "label": ex.gold}
    if name == "siqa":
        context, question = _split_siqa(ex.question)
        return {"context": context, "question": question, "answerA": ex.choices[0], "answerB": ex.choices[1],
                "answerC": ex.choices[2], "label": str(ex.gold + 1)}
    if name == "winogrande":
        return {"sentence": ex.question, "option1": ex.choices[0], "option2": ex.choices[1], "answer": str(ex.gold + 1)}
    if name == "boolq":  # LLM-Adapters' BoolQ has no passage; lm-eval adds the "?" itself
        return {"passage": "", "question": ex.question.removesuffix("?"), "label": ex.gold}
    if name == "hellaswag":
        assert raw is not None, "hellaswag is compared on the raw rows"
        return {**raw, "endings": list(raw["endings"])}
    raise KeyError(f"no lm-eval definition to compare {name} with; comparable: {', '.join(LM_EVAL_TASKS)}")


def raw_rows(name: str, examples: Sequence[Example]) -> list[dict[str, Any]] | None:
    """HellaSwag's raw rows (before any preprocessing) for the test items, by file index."""
    if name != "hellaswag":
        return None
    spec = registry.spec(name)
    root = sources.current().root
    rows = configured.read_hellaswag_text(configured.data_path(spec.base_dir(root), spec.test.path))
    return [rows[int(ex.id.split("-")[1])] for ex in examples]


def lm_eval_task(name: str, docs: list[dict[str, Any]]) -> Any:
    """lm-eval's own task for ``name`` (its YAML, includes and functions), over ``docs``."""
    import datasets
    import lm_eval.tasks
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks._yaml_loader import load_yaml

    logging.getLogger("lm_eval").setLevel(logging.ERROR)  # it warns that custom_dataset takes kwargs
    datasets.disable_progress_bars()
    config = load_yaml(Path(lm_eval.tasks.__file__).parent / LM_EVAL_TASKS[name][1])
    config.pop("tag", None)
    config.update(dataset_path=None, dataset_name=None, dataset_kwargs=None, test_split="test",
                  validation_split=None, training_split=None, fewshot_split=None,
                  custom_dataset=lambda **_: datasets.DatasetDict({"test": datasets.Dataset.from_list(docs)}))
    return ConfigurableTask(config=config)


def lm_eval_requests(task: Any) -> list[list[tuple[str, str]]]:
    """The (context, continuation) pairs lm-eval's task asks, per document, in choice order."""
    task.build_all_requests(limit=None, rank=0, world_size=1)
    per_doc: dict[int, list[tuple[int, tuple[str, str]]]] = {}
    for inst in task.instances:
        per_doc.setdefault(inst.doc_id, []).append((inst.idx, tuple(inst.arguments)))
    return [[args for _, args in sorted(per_doc[i])] for i in range(len(per_doc))]


def request_agreement(name: str, examples: Sequence[Example]) -> tuple[int, int, list[str]]:
    """(items whose requests equal lm-eval's own, items, first differences) for one task."""
    task = registry.get(name)
    raws = raw_rows(name, examples) or [None] * len(examples)
    theirs = lm_eval_requests(lm_eval_task(name, [lm_eval_doc(name, ex, r) for ex, r in zip(examples, raws)]))
    diffs = [f"{name} {ex.id}: ours {task.requests(ex)[0]!r} lm-eval {reqs[0]!r}"
             for ex, reqs in zip(examples, theirs) if task.requests(ex) != reqs]
    return len(examples) - len(diffs), len(examples), diffs[:3]


def choice_agreement(model: Any, tokenizer: Any, names: Sequence[str], limit: int, batch_size: int = 16
                     ) -> dict[str, tuple[int, int]]:
    """Task -> (items where lm-eval's own task, run by lm-eval, picks our native choice, items)."""
    jobs = [(registry.get(n), registry.load(n).test[:limit]) for n in names]
    lm_tasks = {}
    for task, items in jobs:
        raws = raw_rows(task.name, items) or [None] * len(items)
        lm_tasks[task.name] = lm_eval_task(task.name, [lm_eval_doc(task.name, ex, r) for ex, r in zip(items, raws)])
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

