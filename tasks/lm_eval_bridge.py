"""lm-evaluation-harness as an evaluation backend (``--eval-backend lm-eval``).

Our tasks are exported as lm-eval task YAML over a local JSON-lines file of the very items we
evaluate (``dataset_path: json``), so lm-eval works offline and asks exactly our requests:

* likelihood, one context per item: ``doc_to_text`` is the context, ``doc_to_choice`` the
  continuations (their one leading space becomes ``target_delimiter``, so lm-eval's
  ``acc_norm`` divides by the same character count as ours);
* likelihood, one continuation per item (WinoGrande's partial scoring): lm-eval's
  multiple-input form, as its own winogrande task does: ``doc_to_text`` gives the gold index,
  ``doc_to_choice`` the per-option contexts, ``doc_to_target`` the shared continuation. lm-eval
  then reports ``acc`` only (its ``acc_norm`` would divide by the contexts' lengths);
* generation: ``doc_to_text`` is the full LLM-Adapters prompt, ``generation_kwargs`` our
  decoding, and ``process_results`` calls our answer extraction (``tasks.llm_adapters.judge``),
  so the backends differ only in who generates.

The in-memory (adapted) model goes through lm-eval's ``HFLM`` wrapper; the batch size is given
to HFLM's constructor because ``simple_evaluate`` ignores ``batch_size`` for a constructed LM.
Any task lm-eval knows can also be run by name (``--tasks lm-eval:hellaswag``) where its data
is reachable, beside our tasks in one command (lm-eval evaluates it whatever ``--eval-backend``
says), with lm-eval's few-shot and chat-template options; its metrics are recorded as lm-eval
reports them.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import logging
import re
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from tasks import generation, likelihood, llm_adapters, sources
from tasks.base import Example, Task, TaskData, UnknownTask
from tasks.evaluation import EvalSettings, Evaluation, ProtocolError, generation_prompt, likelihood_prompt, metric

HELPER_MODULE = "peft_bench_lm_eval"  # written beside generation YAMLs for ``process_results``
_HELPER_SOURCE = (
    '"""Written by peft-bench: scores lm-eval generations with peft-bench\'s answer extraction."""\n'
    "from tasks.lm_eval_bridge import process_generation  # noqa: F401\n"
)
OUTPUT_TYPES = {"multiple_choice": "likelihood", "loglikelihood": "likelihood", "generate_until": "generate"}


def process_generation(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """lm-eval ``process_results`` for exported generation tasks: our extraction, our ``acc``."""
    _, correct = llm_adapters.judge(doc["answer_type"], doc["vocabulary"], doc["gold"], results[0])
    return {"acc": float(correct)}


# -- export ------------------------------------------------------------------------------------

def _strip_space(text: str) -> str:
    return text[1:] if text.startswith(" ") else text


def likelihood_docs(task: Task, examples: Sequence[Example]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Documents and YAML fields whose lm-eval requests equal ``task.requests`` item by item."""
    per_item = [task.requests(ex) for ex in examples]
    delimiter = " " if all(cont.startswith(" ") for reqs in per_item for _, cont in reqs) else ""
    strip = _strip_space if delimiter else (lambda s: s)
    if all(len({ctx for ctx, _ in reqs}) == 1 for reqs in per_item):
        docs = [{"id": ex.id, "context": reqs[0][0], "choices": [strip(c) for _, c in reqs], "gold": ex.gold}
                for ex, reqs in zip(examples, per_item)]
        fields = {"doc_to_text": "context", "doc_to_choice": "choices", "doc_to_target": "gold",
                  "metric_list": [{"metric": m} for m in task.metrics]}
    elif all(len({cont for _, cont in reqs}) == 1 for reqs in per_item):
        docs = [{"id": ex.id, "contexts": [ctx for ctx, _ in reqs], "continuation": strip(reqs[0][1]), "gold": ex.gold}
                for ex, reqs in zip(examples, per_item)]
        fields = {"doc_to_text": "gold", "doc_to_choice": "contexts", "doc_to_target": "continuation",
                  "metric_list": [{"metric": "acc"}]}
    else:
        raise ProtocolError(f"{task.name}: items mix several contexts and several continuations; lm-eval's "
                            f"multiple_choice cannot express that")
    fields.update(output_type="multiple_choice", target_delimiter=delimiter)
    return docs, fields


def generation_docs(task: Task, examples: Sequence[Example], settings: EvalSettings
                    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    docs = [{"id": ex.id, "prompt": llm_adapters.eval_prompt(ex), "gold": llm_adapters.gold_answer(task, ex),
             "answer_type": task.answer_type, "vocabulary": list(task.extraction_vocabulary(ex))} for ex in examples]
    kwargs = {"until": [], "max_gen_toks": settings.max_new_tokens or task.max_new_tokens, "do_sample": False}
    if settings.num_beams > 1:
        kwargs["num_beams"] = settings.num_beams
    fields = {"output_type": "generate_until", "doc_to_text": "prompt", "doc_to_target": "gold",
              "generation_kwargs": kwargs, "process_results": f"!function {HELPER_MODULE}.process_generation",
              "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}]}
    return docs, fields


def _yaml(fields: dict[str, Any]) -> str:
    """YAML text of the task config; ``!function`` stays an unquoted tag (yaml.dump would quote it)."""
    import yaml

    tagged = {k: v for k, v in fields.items() if isinstance(v, str) and v.startswith("!function ")}
    text = yaml.safe_dump({k: v for k, v in fields.items() if k not in tagged}, sort_keys=False, allow_unicode=True)
    return text + "".join(f"{k}: {v}\n" for k, v in tagged.items())


def export(task: Task, examples: Sequence[Example], protocol: str, settings: EvalSettings,
           folder: Path) -> tuple[str, Path]:
    """Write ``<name>/<name>.jsonl`` + ``.yaml`` (+ the helper module) under ``folder``.

    Returns the lm-eval task name and its folder. The name carries a hash of the documents and
    config, so a changed item or setting never reuses another export (nor the ``datasets``
    cache built from it), and one folder per export keeps lm-eval's indexing to what is asked.
    """
    docs, fields = (likelihood_docs(task, examples) if protocol == "likelihood"
                    else generation_docs(task, examples, settings))
    body = "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs)
    digest = hashlib.sha256((body + json.dumps(fields, sort_keys=True)).encode()).hexdigest()[:12]
    name = f"peftbench_{re.sub(r'[^A-Za-z0-9]+', '_', task.name).strip('_')[-40:]}_{protocol}_{digest}"
    folder = folder / name
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"{name}.jsonl"
    if not data.exists():
        data.write_text(body, encoding="utf-8")
    config = {"task": name, "dataset_path": "json",
              "dataset_kwargs": {"data_files": {"test": str(data)}, "cache_dir": str(folder / "datasets-cache")},
              "test_split": "test", **fields, "metadata": {"version": 1, "exported_from": task.name}}
    (folder / f"{name}.yaml").write_text(_yaml(config), encoding="utf-8")
    if protocol == "generate":
        (folder / f"{HELPER_MODULE}.py").write_text(_HELPER_SOURCE, encoding="utf-8")
    return name, folder


# -- running lm-eval ---------------------------------------------------------------------------

def _hflm(model: nn.Module, tokenizer: Any, batch_size: int) -> Any:
    from transformers import PreTrainedTokenizerBase

    if not isinstance(tokenizer, PreTrainedTokenizerBase):
        raise ProtocolError(f"the lm-eval backend needs a Hugging Face tokenizer, not {type(tokenizer).__name__} "
                            f"(use a model with one, e.g. smollm2-135m, or --eval-backend native)")
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)


def run_lm_eval(model: nn.Module, tokenizer: Any, names: list[Any], task_manager: Any, settings: EvalSettings,
                limit: int | None = None, **options: Any) -> dict[str, Any]:
    """simple_evaluate on the in-memory model (``names``: task names, or lm-eval task objects as
    ``tasks.agreement`` builds); the model's train/eval mode is restored after. ``options``:
    further simple_evaluate arguments (few-shot, chat template for named tasks)."""
    from lm_eval import simple_evaluate

    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    was_training = model.training
    try:
        lm = _hflm(model, tokenizer, settings.batch_size)
        with torch.inference_mode():
            return simple_evaluate(lm, tasks=names, task_manager=task_manager, limit=limit, log_samples=True,
                                   bootstrap_iters=0, verbosity="ERROR", **options)
    finally:
        model.train(was_training)


def evaluate_many(protocol: str, model: nn.Module, tokenizer: Any, jobs: Sequence[tuple[Task, Sequence[Example]]],
                  settings: EvalSettings) -> list[Evaluation]:
    """Our tasks through lm-eval in one ``simple_evaluate`` call (its set-up costs seconds per call)."""
    from lm_eval.tasks import TaskManager

    root = Path(settings.workdir or tempfile.mkdtemp(prefix="peft-bench-")) / "lm-eval-tasks"
    exports = [export(task, examples, protocol, settings, root) for task, examples in jobs]
    manager = TaskManager(include_path=[str(folder) for _, folder in exports], include_defaults=False)
    out = run_lm_eval(model, tokenizer, [name for name, _ in exports], manager, settings)
    return [_evaluation(protocol, task, examples, out, name, settings)
            for (task, examples), (name, _) in zip(jobs, exports)]


def _evaluation(protocol: str, task: Task, examples: Sequence[Example], out: dict[str, Any], name: str,
                settings: EvalSettings) -> Evaluation:
    """Our records from lm-eval's per-sample log: its scores, our record format and metrics."""
    by_doc = {s["doc_id"]: s for s in out["samples"][name]}
    if sorted(by_doc) != list(range(len(examples))):
        raise RuntimeError(f"lm-eval returned {len(by_doc)} samples for {len(examples)} items of {task.name}")
    reported = {k: v for k, v in out["results"][name].items() if isinstance(v, (int, float))}
    if protocol == "generate":
        texts = [by_doc[i]["resps"][0][0] for i in range(len(examples))]
        samples = generation.records(task, examples, texts, [llm_adapters.eval_prompt(ex) for ex in examples])
        if any(bool(by_doc[i]["acc"]) != s["correct"] for i, s in enumerate(samples)):
            raise RuntimeError(f"{task.name}: lm-eval's process_results disagrees with our records")
        return Evaluation(samples, [metric("acc", samples, "correct")], "generate",
                          generation_prompt(task, settings), extra={"lm_eval_reported": reported})
    samples = []
    for i, ex in enumerate(examples):
        lls = [float(r[0]) for r in by_doc[i]["filtered_resps"]]
        requests = task.requests(ex)  # what the export asks (tested equal to what lm-eval asks)
        lengths = [likelihood.choice_length(cont) for _, cont in requests]
        prompt, choices = likelihood.as_text(requests)
        rec = {"id": ex.id, "gold": ex.gold, "pred": max(range(len(lls)), key=lls.__getitem__),
               "correct": bool(by_doc[i]["acc"]), "logliks": lls, "lengths": lengths, "prompt": prompt,
               "choices": choices}
        if "acc_norm" in by_doc[i]:
            rec["pred_norm"] = max(range(len(lls)), key=lambda k: lls[k] / max(lengths[k], 1))
            rec["correct_norm"] = bool(by_doc[i]["acc_norm"])
        samples.append(rec)
    metrics = [metric("acc", samples, "correct")]
    if all("correct_norm" in s for s in samples):
        metrics.append(metric("acc_norm", samples, "correct_norm"))
    return Evaluation(samples, metrics, "likelihood", likelihood_prompt(task), extra={"lm_eval_reported": reported})


def evaluate(protocol: str, model: nn.Module, tokenizer: Any, task: Task, examples: Sequence[Example],
             settings: EvalSettings) -> Evaluation:
    """Evaluate through lm-eval: our task exported as YAML, or an lm-eval task by name."""
    if task.family != "lm-eval":
        return evaluate_many(protocol, model, tokenizer, [(task, examples)], settings)[0]
    name = task.extra["lm_eval_name"]
    out = run_lm_eval(model, tokenizer, [name], _task_manager(), settings, settings.limit or None,
                      num_fewshot=settings.num_fewshot, apply_chat_template=settings.apply_chat_template)
    metrics = []
    for key, value in out["results"].get(name, {}).items():
        measure, _, filt = key.partition(",")
        if not filt or measure.endswith("_stderr") or not isinstance(value, (int, float)):
            continue
        stderr = out["results"][name].get(f"{measure}_stderr,{filt}")
        metrics.append({"name": measure if filt == "none" else f"{measure}[{filt}]", "value": float(value),
                        "stderr": float(stderr) if isinstance(stderr, (int, float)) else None,
                        "n": out.get("n-samples", {}).get(name, {}).get("effective")})
    samples = [{"subtask": sub, "id": s["doc_id"], "target": str(s.get("target")),
                "resps": json.dumps(s.get("filtered_resps"), default=str)[:2000],
                **{m: s[m] for m in s.get("metrics", []) if isinstance(s.get(m), (int, float))}}
               for sub, rows in out["samples"].items() for s in rows]
    config = out["configs"].get(name) or next(iter(out["configs"].values()), {})
    blob = json.dumps({k: v for k, v in config.items() if k != "metadata"}, sort_keys=True, default=str)
    return Evaluation(samples, metrics, OUTPUT_TYPES.get(config.get("output_type"), str(config.get("output_type"))),
                      f"lm-eval:{name}#{hashlib.sha256(blob.encode()).hexdigest()[:8]}",
                      shots=int(out.get("n-shot", {}).get(name, 0) or 0), chat_template=settings.apply_chat_template)


# -- lm-eval:NAME tasks ------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _task_manager() -> Any:
    """lm-eval's index of its own tasks (reads every task YAML it ships: seconds, so once)."""
    from lm_eval.tasks import TaskManager

    return TaskManager()


def _load_named(name: str) -> TaskData:
    """No items of ours: lm-eval loads its own data at evaluation. Records the task YAML's hash."""
    import lm_eval

    manager = _task_manager()
    if name not in manager.all_tasks:
        close = difflib.get_close_matches(name, manager.all_tasks, n=5)
        raise UnknownTask(f"lm-evaluation-harness has no task {name!r}" + (f"; close: {', '.join(close)}" if close else ""))
    _check_data(name, manager)
    entry = manager.task_index[name]
    yaml_path = getattr(entry, "yaml_path", None)
    if yaml_path is not None and Path(yaml_path).is_file():
        digest = sources.sha256(Path(yaml_path))
    else:  # generated and python-only entries have no file: hash what the index knows
        digest = hashlib.sha256(repr(entry).encode()).hexdigest()
    note = (f"lm-evaluation-harness {lm_eval.__version__} task {name}: its own data and splits (loaded by "
            f"lm-eval at evaluation; needs that data on this machine)")
    return TaskData([], [], f"lm-eval:{name}", {f"lm-eval:{name}": digest}, note)


def _check_data(name: str, manager: Any) -> None:
    """Build the task now (lm-eval loads its data here): data that is neither cached nor
    reachable fails in one line before any run, not as a traceback in every run."""
    from lm_eval.tasks import get_task_dict

    try:
        get_task_dict([name], manager)
    except Exception as err:  # noqa: BLE001 - offline hub, missing file, bad config: one message
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
        raise sources.DataError(
            f"lm-eval:{name}: its data could not be loaded ({type(err).__name__}: {first}); lm-eval needs it "
            f"in the Hugging Face cache of this machine (run it once where the hub is reachable)") from None


def make_task(name: str) -> Task:
    return Task(name=f"lm-eval:{name}", family="lm-eval", description=f"lm-evaluation-harness task {name}",
                load=lambda: _load_named(name), protocols=(), extra={"lm_eval_name": name,
                                                                      "train_source": "none"})
