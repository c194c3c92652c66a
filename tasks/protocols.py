"""Evaluation protocols and backends: the one place that knows how a task is asked and scored.

A protocol says how a task's examples become training text and how a model is scored on them:

* ``likelihood`` (default): multiple choice by summed log-likelihood, lm-evaluation-harness
  style; ``acc`` and ``acc_norm`` (EVALUATION.md, protocol 1);
* ``generate``: LLM-Adapters' instruction template, free generation, answer extraction;
  ``acc`` (EVALUATION.md, protocol 2).

A backend says who runs the protocol: ``native`` (our scorer and generator) or ``lm-eval``
(lm-evaluation-harness's HFLM on the same in-memory model, ``tasks.lm_eval_bridge``). The
driver only dispatches through ``train_pair`` and ``evaluate`` and records what comes back.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from torch import nn

from tasks import generation, likelihood, llm_adapters, prompting, registry
from tasks.base import Example, Task
from tasks.evaluation import (EvalSettings, Evaluation, ProtocolError, generation_prompt, likelihood_prompt,
                              metric)
from tasks.formatting import TrainTarget

BACKENDS = ("native", "lm-eval")


# -- likelihood --------------------------------------------------------------------------------

def likelihood_train_pair(task: Task, ex: Example) -> tuple[str, str]:
    return task.train_pair(ex)


def _shots(task: Task, examples: Sequence[Example], settings: EvalSettings) -> list[list[Example]]:
    """Each example's few-shot examples, from the task's train split (``tasks.prompting``)."""
    k = prompting.shots_of(settings)
    return prompting.draw(registry.load(task).train if k else [], examples, k, task.name)


def likelihood_evaluate(model: nn.Module, tokenizer: Any, task: Task, examples: Sequence[Example],
                        settings: EvalSettings) -> Evaluation:
    requests = None
    if prompting.shots_of(settings) or settings.apply_chat_template:
        requests = [prompting.likelihood_requests(task, ex, shots, tokenizer, settings.apply_chat_template)
                    for ex, shots in zip(examples, _shots(task, examples, settings))]
    samples = likelihood.score(model, tokenizer, task, examples, batch_size=settings.batch_size,
                               device=settings.device, progress=settings.progress, requests=requests,
                               share=settings.share)
    keys = {"acc": "correct", "acc_norm": "correct_norm"}
    return Evaluation(samples, [metric(name, samples, keys[name]) for name in task.metrics], "likelihood",
                      likelihood_prompt(task), shots=prompting.shots_of(settings),
                      chat_template=settings.apply_chat_template)


# -- generation --------------------------------------------------------------------------------

def generation_train_pair(task: Task, ex: Example) -> tuple[str, str]:
    """LLM-Adapters' training text: template, output, EOS id, loss on the prompt too."""
    return llm_adapters.train_prompt(ex), TrainTarget(ex.output, add_eos=True, train_on_inputs=True)


def generation_evaluate(model: nn.Module, tokenizer: Any, task: Task, examples: Sequence[Example],
                        settings: EvalSettings) -> Evaluation:
    prompts = None
    if prompting.shots_of(settings) or settings.apply_chat_template:
        prompts = [prompting.generation_prompt(ex, shots, tokenizer, settings.apply_chat_template)
                   for ex, shots in zip(examples, _shots(task, examples, settings))]
    samples = generation.evaluate(model, tokenizer, task, examples, batch_size=settings.batch_size,
                                  device=settings.device, progress=settings.progress,
                                  num_beams=settings.num_beams, max_new_tokens=settings.max_new_tokens,
                                  prompts=prompts, share=settings.share)
    return Evaluation(samples, [metric("acc", samples, "correct")], "generate", generation_prompt(task, settings),
                      shots=prompting.shots_of(settings), chat_template=settings.apply_chat_template,
                      extra={"num_beams": settings.num_beams,
                             "max_new_tokens": settings.max_new_tokens or task.max_new_tokens})


@dataclass(frozen=True)
class Protocol:
    name: str
    description: str
    train_pair: Callable[[Task, Example], tuple[str, str]]
    evaluate: Callable[[nn.Module, Any, Task, Sequence[Example], EvalSettings], Evaluation]


PROTOCOLS: dict[str, Protocol] = {p.name: p for p in [
    Protocol("likelihood", "multiple choice by log-likelihood (lm-eval style): acc, acc_norm (as the task lists)",
             likelihood_train_pair, likelihood_evaluate),
    Protocol("generate", "LLM-Adapters template, generation, answer extraction: acc",
             generation_train_pair, generation_evaluate),
]}


def get(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise ProtocolError(f"unknown protocol {name!r}; valid: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def check(task: Task, protocol: str, backend: str) -> None:
    """Refuse, with a way out, a task the protocol or backend cannot evaluate."""
    get(protocol)
    if backend not in BACKENDS:
        raise ProtocolError(f"unknown evaluation backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if task.family == "lm-eval":  # lm-eval's own task: lm-eval evaluates it, whatever the backend
        return
    if protocol not in task.protocols:
        raise ProtocolError(f"task {task.name} has no {protocol} protocol (it supports: {', '.join(task.protocols)}); "
                            f"use --protocol {task.protocols[0]} or leave --protocol at auto")


def resolve(tasks: Sequence[Task], requested: str) -> str:
    """The run's protocol: ``auto`` picks likelihood when every task has it, else generate."""
    own = [t for t in tasks if t.family != "lm-eval"]
    if requested != "auto":
        return get(requested).name
    for name in PROTOCOLS:
        if all(name in t.protocols for t in own):
            return name
    spread = "; ".join(f"{t.name}: {', '.join(t.protocols)}" for t in own)
    raise ProtocolError(f"no protocol fits every task ({spread}); evaluate them in separate commands")


def backend_for(task: Task, backend: str) -> str:
    """Who evaluates ``task``: lm-eval for an ``lm-eval:NAME`` task (only lm-eval knows it), else
    the run's backend; so lm-eval tasks and ours mix in one command."""
    return "lm-eval" if task.family == "lm-eval" else backend


def evaluate(backend: str, protocol: str, model: nn.Module, tokenizer: Any, task: Task,
             examples: Sequence[Example], settings: EvalSettings) -> Evaluation:
    """Evaluate ``examples`` of ``task`` under ``protocol`` with ``backend`` (see ``backend_for``)."""
    check(task, protocol, backend)
    if backend_for(task, backend) == "lm-eval" and task.family != "lm-eval" and (
            prompting.shots_of(settings) or settings.apply_chat_template):
        raise ProtocolError(f"task {task.name}: few-shot and chat templates for the project's own tasks are built by "
                            f"the native backend (tasks/prompting.py); use --eval-backend native")
    if backend_for(task, backend) == "lm-eval":
        from tasks import lm_eval_bridge

        return lm_eval_bridge.evaluate(protocol, model, tokenizer, task, examples, settings)
    return get(protocol).evaluate(model, tokenizer, task, examples, settings)
