"""Every setting a run has, once: who owns it and what it affects.

A setting belongs to the ``trainer`` (``TrainConfig``: how the uniform driver trains), the
``eval`` (``EvalConfig``: how a model is scored), or the ``run`` (``RunConfig``: what is trained
and evaluated); a method's own hyperparameters are its config dataclass's fields (owner
``method``, not listed: each method declares them). What a setting affects decides how every
other part treats it, so the derived key sets below are the only place those lists exist:

* ``TRAINED``: it changes what is trained: two runs differing in it are different method
  variants (``harness.labels``); every trainer key and every method key;
* ``MEASURED``: it changes what an evaluation measures: tables refuse to pool or rank values that
  differ in it (``reports.tables.drop_mixed``, ``reports.stats``), and it is a column of the tidy
  table beside the value (``column``);
* ``BEFORE_EVAL``: the cached "before" evaluation of the base model depends on it;
* ``BUDGET``: the training budget every method should share (the report's fair-budget paragraph);
* ``flag``: it has its own ``bench run`` option (reconstructed commands use it, not ``--set``).

``omit_default``: the resolved config leaves the key out at its default, so run ids recorded
before the key existed stay the same.

Adding a setting = its dataclass field (``harness.config``) + one line here; a test checks the
two agree.
"""
from __future__ import annotations

from dataclasses import dataclass

TRAINER, EVAL, RUN = "trainer", "eval", "run"
TRAINED, MEASURED, BEFORE_EVAL, BUDGET = "trained", "measured", "before_eval", "budget"


@dataclass(frozen=True)
class Setting:
    key: str
    owner: str
    affects: frozenset[str] = frozenset()
    column: str = ""  # the tidy-table / evaluation-summary column that carries it (MEASURED)
    flag: str = ""  # its own ``bench run`` option
    omit_default: bool = False


def _s(key: str, owner: str, *affects: str, column: str = "", flag: str = "", omit_default: bool = False) -> Setting:
    return Setting(key, owner, frozenset(affects), column, flag, omit_default)


SETTINGS: tuple[Setting, ...] = (
    # the trainer: every key changes what is trained
    _s("lr", TRAINER, TRAINED, BUDGET),
    _s("max_steps", TRAINER, TRAINED, BUDGET, flag="--max-steps"),
    _s("epochs", TRAINER, TRAINED, BUDGET, flag="--epochs"),
    _s("batch_size", TRAINER, TRAINED, BUDGET),
    _s("max_length", TRAINER, TRAINED, BUDGET),
    _s("weight_decay", TRAINER, TRAINED),
    _s("micro_batch_size", TRAINER, TRAINED),
    _s("warmup_steps", TRAINER, TRAINED),
    _s("warmup_ratio", TRAINER, TRAINED),
    _s("min_lr_ratio", TRAINER, TRAINED),
    _s("grad_clip", TRAINER, TRAINED),
    _s("train_on_inputs", TRAINER, TRAINED),
    _s("timing_warmup_steps", TRAINER, TRAINED),
    _s("precision", TRAINER, TRAINED, BEFORE_EVAL),
    # the evaluation: changes what is measured, never what is trained
    _s("eval_batch_size", EVAL),
    _s("eval_limit", EVAL, MEASURED, BEFORE_EVAL, column="eval_limit", flag="--eval-limit"),
    _s("num_beams", EVAL, MEASURED, BEFORE_EVAL, column="num_beams"),
    _s("max_new_tokens", EVAL, MEASURED, BEFORE_EVAL, column="max_new_tokens"),
    # the run
    _s("model", RUN, BEFORE_EVAL),
    _s("method", RUN),
    _s("method_config", RUN),
    _s("train_tasks", RUN),
    _s("eval_tasks", RUN),
    _s("seed", RUN),
    _s("protocol", RUN, MEASURED, BEFORE_EVAL, column="protocol"),
    _s("backend", RUN, MEASURED, BEFORE_EVAL, column="backend"),
    _s("retention_tasks", RUN),
    _s("retention_text", RUN),
    _s("sequence", RUN),
    _s("validation", RUN, omit_default=True),
    _s("adapter", RUN, omit_default=True),
    _s("num_fewshot", RUN, MEASURED, BEFORE_EVAL, column="shots", omit_default=True),
    _s("apply_chat_template", RUN, MEASURED, BEFORE_EVAL, column="chat_template", omit_default=True),
)
BY_KEY: dict[str, Setting] = {s.key: s for s in SETTINGS}

# facts of an evaluation that are no setting but tell how it measured: the prompt format the
# task used and a digest of the data it read
MEASUREMENT_FACTS = ("prompt", "data_sha256")


def comma_list(text: str) -> list[str]:
    """A list as typed on the command line: ``"a, b,,c"`` -> ``["a", "b", "c"]`` (list-valued
    ``--set`` values and every comma-separated option of the CLIs)."""
    return [t.strip() for t in text.split(",") if t.strip()]


def keys(owner: str | None = None, affects: str | None = None) -> tuple[str, ...]:
    """Setting keys, in catalogue order, of ``owner`` and/or affecting ``affects``."""
    return tuple(s.key for s in SETTINGS
                 if (owner is None or s.owner == owner) and (affects is None or affects in s.affects))


TRAINER_KEYS = keys(TRAINER)
EVAL_KEYS = keys(EVAL)
# keys that only change how a run is evaluated: runs differing only here are one method variant
EVAL_ONLY_KEYS = tuple(s.key for s in SETTINGS if TRAINED not in s.affects and s.owner != RUN)
BUDGET_KEYS = keys(affects=BUDGET)
BEFORE_EVAL_KEYS = keys(affects=BEFORE_EVAL)
FLAG_KEYS = tuple(s.key for s in SETTINGS if s.flag)
# the columns an evaluation's values must agree on to be compared ("measured the same way")
MEASURED_BY = tuple(BY_KEY[k].column for k in keys(affects=MEASURED)) + MEASUREMENT_FACTS
