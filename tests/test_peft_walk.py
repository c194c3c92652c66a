"""Every tuner the installed peft registers, walked on tiny-llama through the harness's own paths.

A supported tuner (``peft:<type>``) is adapted with its causal LM default config, trained two
steps, scored (the likelihood scorer), saved as a peft adapter (``harness.export``), loaded onto
a fresh base as ``bench eval --adapter`` does, and must re-score identically. An unsupported one
must still fail for the reason ``methods.peft_catalogue.UNSUPPORTED`` gives. The committed list
``methods/peft_tuners_tested.json`` (what ``bench list methods`` prints) must be what this walk
proves with the installed peft; regenerate it with ``python tests/test_peft_walk.py``.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import peft
import pytest
from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

from harness.config import TrainConfig, build_configs
from harness.export import save_trained
from harness.models import load_model
from methods import registry
from methods.base import Adapted, TrainContext
from methods.peft_catalogue import TESTED_FILE, UNSUPPORTED, tested
from methods.peft_tuners import _adapt_peft, causal_lm_config_class
from tasks.likelihood import loglikelihoods
from tests.test_methods import _one_step

ALL_TYPES = sorted(PEFT_TYPE_TO_CONFIG_MAPPING)
SUPPORTED = [t for t in ALL_TYPES if t not in UNSUPPORTED]
REQUESTS = [("Question: is the sky blue?\nAnswer:", " yes"), ("Question: is the sky blue?\nAnswer:", " no"),
            ("2 + 2 =", " 4"), ("The capital of France is", " Paris")]


def _train(adapted: Adapted, steps: int = 2) -> None:
    """The driver's hook order (tests/test_methods.py); a non-finite loss is a failure."""
    for step in range(steps):
        loss = _one_step(adapted, step)
        if not math.isfinite(loss):
            raise RuntimeError(f"loss is not finite ({loss}) at step {step}")


def walk(name: str, config: object, folder: Path) -> tuple[list[float], list[float]]:
    """Adapt, train, score, save, reload and re-score; return both scores."""
    spec = registry.get(name)
    model, tok = load_model("tiny-llama")
    adapted = spec.adapt(model, config, TrainContext(lr=1e-2, total_steps=2))
    _train(adapted)
    assert adapted.trainable_params() == adapted.model.get_nb_trainable_parameters()[0]
    scores = loglikelihoods(adapted.model, tok, REQUESTS, progress=False)
    save_trained(adapted, "adapter", folder, "tiny-llama", tok, lambda: load_model("tiny-llama")[0], {})
    reloaded, tok = load_model("tiny-llama", adapter=str(folder))
    return scores, loglikelihoods(reloaded, tok, REQUESTS, progress=False)


@pytest.mark.slow  # about 1 s of CPU per tuner, 40 tuners: ~50 s on a quiet machine
@pytest.mark.parametrize("peft_type", SUPPORTED)
def test_tuner_trains_saves_and_rescores_identically(peft_type, tmp_path):
    spec = registry.get(f"peft:{peft_type.lower()}")
    config, _, _ = build_configs(spec, {}, None, TrainConfig())  # bench run's checks of the defaults
    scores, rescored = walk(spec.name, config, tmp_path / "adapter")
    assert all(math.isfinite(s) for s in scores)
    assert rescored == scores


@pytest.mark.parametrize("peft_type", sorted(UNSUPPORTED))
def test_unsupported_tuner_fails_for_the_stated_reason(peft_type, tmp_path):
    with pytest.raises(registry.UnknownMethod, match="cannot run in this harness"):
        registry.get(f"peft:{peft_type.lower()}")
    model, _ = load_model("tiny-llama")
    with pytest.raises(Exception, match=UNSUPPORTED[peft_type][1]):
        config = causal_lm_config_class(peft_type)(task_type="CAUSAL_LM")
        _train(_adapt_peft(model, config, TrainContext(lr=1e-2, total_steps=2)))


def test_bench_run_refuses_an_unsupported_tuner_in_one_line(tmp_path, capsys):
    from harness.cli import main

    code = main(["run", "--methods", "lora,peft:poly", "--tasks", "arc_e", "--model", "tiny-llama",
                 "--max-steps", "1", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "peft:poly" in err[0] and "task_ids" in err[0]
    assert not any(tmp_path.iterdir())  # refused before anything ran


def test_committed_tested_list_is_this_walk():
    assert tested() == _current(), (f"{TESTED_FILE.name} is stale for peft {peft.__version__}: "
                                    f"run `python tests/test_peft_walk.py` and commit it")


def _current() -> dict[str, object]:
    return {"peft": peft.__version__, "tested": SUPPORTED}


if __name__ == "__main__":  # regenerate the committed list after the walk passes
    code = pytest.main(["-q", "-p", "no:cacheprovider", __file__, "-k", "not committed"])
    if code == 0:
        TESTED_FILE.write_text(json.dumps(_current(), indent=1) + "\n")
        print(f"wrote {TESTED_FILE}")
    sys.exit(code)
