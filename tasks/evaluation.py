"""What an evaluation is asked and what it gives back, shared by the protocols and backends.

Kept apart from ``tasks.protocols`` (which dispatches to the backends) so a backend such as
``tasks.lm_eval_bridge`` can use these types without importing the dispatcher back.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from tasks import likelihood, llm_adapters
from tasks.base import Example, Task
from tasks.sharing import Sharing


class ProtocolError(ValueError):
    """A task, protocol and backend that do not fit together; the message says what would."""


@dataclass(frozen=True)
class EvalSettings:
    """How to evaluate, beyond which items: batching, device, decoding, a folder for exports."""

    batch_size: int = 32
    device: str | torch.device | None = None
    progress: bool = True
    num_beams: int = 1  # generation: 1 = greedy (CPU-friendly default), 4 = LLM-Adapters' setting
    max_new_tokens: int = 0  # generation: 0 = the task's own budget
    workdir: Path | None = None  # backends may write files here (lm-eval task exports)
    limit: int = 0  # lm-eval:NAME tasks only (ours pass their items): items per task, 0 = all
    # as lm-eval's --num_fewshot / --apply_chat_template; for an lm-eval:NAME task None = its own
    # default, for ours None = zero-shot (tasks.prompting builds ours the lm-eval way)
    num_fewshot: int | None = None
    apply_chat_template: bool = False
    share: Sharing | None = None  # several processes: which batches this one scores (native backend)


@dataclass
class Evaluation:
    """What one evaluation of one task produced, in the form run records store it."""

    samples: list[dict[str, Any]]
    metrics: list[dict[str, Any]]  # {"name", "value", "stderr", "n"}
    protocol: str  # as measured (an lm-eval:NAME task reports lm-eval's own output type)
    prompt: str  # template id (+ decoding for generation): equal ids = equal phrasing
    shots: int = 0
    chat_template: bool = False  # prompts went through the tokenizer's chat template
    extra: dict[str, Any] = field(default_factory=dict)


def metric(name: str, samples: Sequence[dict[str, Any]], key: str) -> dict[str, Any]:
    acc, stderr, n = likelihood.accuracy(samples, key)
    return {"name": name, "value": acc, "stderr": stderr, "n": n}


_PROBE = Example("probe", "Q1 _ Q2", ("C1", "C2"), 0, instruction="I", output="O", answer="A")


def likelihood_prompt(task: Task) -> str:
    """Id of the exact text scored: the task's requests for a fixed probe example, plus the name
    of any transform its data's text goes through (equal ids = equal text, whatever the source)."""
    blob = json.dumps(task.requests(_PROBE)) + (f"|{task.text_id}" if task.text_id else "")
    return "mc#" + hashlib.sha256(blob.encode()).hexdigest()[:8]


def generation_prompt(task: Task, settings: EvalSettings) -> str:
    """Template id, any transform of the data's text, and decoding: greedy vs beam or another
    budget is another measurement."""
    decoding = "greedy" if settings.num_beams == 1 else f"beam{settings.num_beams}"
    text = f",{task.text_id}" if task.text_id else ""
    return f"{llm_adapters.prompt_id()}{text},{decoding},{settings.max_new_tokens or task.max_new_tokens}tok"
