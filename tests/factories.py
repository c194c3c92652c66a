"""Run records for tests, built through the schema and written the way the harness writes them.

``record`` gives a ``RunRecord`` of a finished run with defaults for everything a test does not
care about; ``evaluation`` one task's scores; ``write`` saves a record (and, optionally, its
per-sample files and step log) into a results folder through ``harness.runfolder``. Tests build
records only here, so a change of the record's format is one change.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from harness import records
from harness.runfolder import write_run_files
from harness.schema.record import Evaluation, Figure, RunRecord, normalized_config

ENV = {"device": {"type": "cpu", "name": "Test CPU"}, "git_commit": "abc123"}
UNITS = {"step_time_s": "s", "peak_rss_bytes": "bytes", "steps": "count", "trainable_params": "count"}


def evaluation(task: str, phase: str, acc: float, n: int = 10, stderr: float | None = 0.1, **how: Any) -> Evaluation:
    """One task's ``acc`` in ``phase``; ``how``: protocol, prompt, shots, data_sha256, chance ..."""
    defaults = {"protocol": "likelihood", "backend": "native", "prompt": "p", "shots": 0, "data_sha256": "d"}
    return Evaluation(task=task, phase=phase, metrics=[{"name": "acc", "value": acc, "stderr": stderr, "n": n}],
                      **{**defaults, **how})


def record(run_id: str, *, model: str = "m", method: str = "lora", train_tasks: Iterable[str] = ("arc_e",),
           eval_tasks: Iterable[str] | None = None, seed: int = 0, method_config: dict[str, Any] | None = None,
           train: dict[str, Any] | None = None, evaluation_config: dict[str, Any] | None = None,
           evals: Iterable[Evaluation] = (), costs: dict[str, float] | None = None, status: str = "ok",
           **fields: Any) -> RunRecord:
    """A run record; ``costs`` by name (units from ``UNITS``), ``fields`` any other record field."""
    train_tasks = list(train_tasks)
    config = normalized_config({
        "model": model, "method": method, "method_config": method_config or {}, "train_tasks": train_tasks,
        "eval_tasks": list(eval_tasks if eval_tasks is not None else train_tasks), "seed": seed,
        "protocol": "likelihood", "backend": "native", "retention_tasks": fields.pop("retention_tasks", []),
        "train": {"lr": 2e-4, "batch_size": 8, "max_length": 128, "max_steps": 10, **(train or {})},
        "eval": {"eval_limit": 0, **(evaluation_config or {})},
    })
    return RunRecord(run_id=run_id, status=status, config=config, environment=fields.pop("environment", ENV),
                     evals=list(evals), costs={k: Figure(v, UNITS[k]) for k, v in (costs or {}).items()}, **fields)


def write(out: Path, rec: RunRecord, samples: dict[tuple[str, str], list[dict[str, Any]]] | None = None,
          steps: list[dict[str, Any]] | None = None) -> Path:
    """Save ``rec`` under ``out/runs/<run_id>/`` with its per-sample files ((phase, task) -> rows)
    and step log; returns the run folder."""
    folder = records.run_dir(out, rec.run_id)
    write_run_files(folder, rec, samples or {}, steps)
    return folder


def byte_bpe_tokenizer(corpus: list[str]) -> Any:
    """A small byte-level BPE Hugging Face tokenizer trained in memory on ``corpus`` (no download):
    the Hugging Face tokenizer path, offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<s>", "</s>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
