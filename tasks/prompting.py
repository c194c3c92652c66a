"""Few-shot examples and chat templates for the project's own tasks, the lm-eval way.

lm-evaluation-harness (``ConfigurableTask.fewshot_context``, ``construct_requests``) builds a
prompt from labelled examples, then the item:

* few-shot examples come from the training split, drawn by one ``random.Random`` seeded with
  its default ``fewshot_seed`` (1234) per task, ``k`` per item in item order (so the first N
  items get the same examples whatever ``--eval-limit``); a task without a training split has
  no examples to give, and asking for them is refused;
* an example is its text, the target delimiter, its gold answer and the few-shot delimiter
  ``"\\n\\n"``: for the likelihood protocol that is the gold request's context + continuation
  (the continuation carries the delimiter, " "); for generation, LLM-Adapters' evaluation
  prompt followed by the record's reference output (the template's "### Response:" line is
  the delimiter, as in their training text);
* with a chat template, the examples and the item are one user message (lm-eval's default,
  ``fewshot_as_multiturn`` off) rendered by the tokenizer's ``apply_chat_template`` with the
  generation prompt; the likelihood continuation then loses its leading target delimiter (a
  choice follows the assistant turn's start directly).

Both are recorded in the evaluation (``shots``, ``chat_template``) and are part of the "before"
evaluation's cache key, so a few-shot number is never mistaken for a zero-shot one.
"""
from __future__ import annotations

import random
from typing import Any, Sequence

from tasks.base import Example, Task
from tasks.evaluation import EvalSettings, ProtocolError
from tasks.llm_adapters import eval_prompt

FEWSHOT_SEED = 1234  # lm-eval's default fewshot_seed
FEWSHOT_DELIMITER = "\n\n"  # lm-eval's default fewshot_delimiter
TARGET_DELIMITER = " "  # lm-eval's default target_delimiter (our continuations begin with it)

Request = tuple[str, str]


def shots_of(settings: EvalSettings) -> int:
    """Few-shot examples per item for one of our tasks (``--num-fewshot``; unset = zero-shot)."""
    return settings.num_fewshot or 0


def draw(pool: Sequence[Example], examples: Sequence[Example], k: int, task: str,
         seed: int = FEWSHOT_SEED) -> list[list[Example]]:
    """``k`` training examples per item, drawn in item order by one generator seeded with ``seed``."""
    if k == 0:
        return [[] for _ in examples]
    if len(pool) < k:
        raise ProtocolError(f"task {task}: --num-fewshot {k} needs {k} training examples to draw from, it has "
                            f"{len(pool)}" + (" (no train split)" if not pool else ""))
    rnd = random.Random(seed)
    return [rnd.sample(list(pool), k) for _ in examples]


def chat(tokenizer: Any, content: str) -> str:
    """``content`` as one user message through the tokenizer's chat template, ready for the answer."""
    if not getattr(tokenizer, "chat_template", None):
        raise ProtocolError("--apply-chat-template: this model's tokenizer has no chat template "
                            "(use an instruct/chat model, or leave the option off)")
    return tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                         add_generation_prompt=True)


def likelihood_requests(task: Task, ex: Example, shots: Sequence[Example], tokenizer: Any,
                        chat_template: bool) -> list[Request]:
    """The item's (context, continuation) per choice, after its few-shot examples, optionally
    through the chat template."""
    prefix = "".join(ctx + cont + FEWSHOT_DELIMITER for ctx, cont in (task.train_pair(s) for s in shots))
    requests = [(prefix + ctx, cont) for ctx, cont in task.requests(ex)]
    if chat_template:
        requests = [(chat(tokenizer, ctx), cont.removeprefix(TARGET_DELIMITER)) for ctx, cont in requests]
    return requests


def generation_prompt(ex: Example, shots: Sequence[Example], tokenizer: Any, chat_template: bool) -> str:
    """LLM-Adapters' evaluation prompt after its few-shot examples (prompt + reference output each),
    optionally through the chat template."""
    text = "".join(eval_prompt(s) + s.output + FEWSHOT_DELIMITER for s in shots) + eval_prompt(ex)
    return chat(tokenizer, text) if chat_template else text

