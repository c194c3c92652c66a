"""What a user takes away works outside the project: a saved LoRA folder loads with
``AutoPeftModelForCausalLM`` and lm-eval's ``peft=``, a LoSiA delta with the ``load_delta`` saved
beside it, each in a Python that never imports the harness, and each re-scores the run's own
after-training accuracy on the same items (tiny-llama; the README has the SmolLM2 figures)."""
from __future__ import annotations

import csv
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from harness import cli
from harness.models import resolve_model
from tasks import lm_eval_bridge
from tasks import registry as task_registry
from tasks.evaluation import EvalSettings

pytestmark = pytest.mark.needs_data
ITEMS = 20

# A user's own scorer, outside the project: sum of log-probabilities of each choice after its
# context (the exported documents), argmax against gold. Byte tokens: context and choice split exactly.
SCORE = """
import json, sys, torch
def accuracy(model, tok, docs_path, delimiter):
    right = n = 0
    for line in open(docs_path):
        doc = json.loads(line)
        ctx = tok(doc["context"], add_special_tokens=False)["input_ids"]
        scores = []
        for choice in doc["choices"]:
            cont = tok(delimiter + choice, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([ctx + cont])).logits[0, len(ctx) - 1:-1]
            scores.append(logits.log_softmax(-1).gather(1, torch.tensor(cont)[:, None]).sum().item())
        right += max(range(len(scores)), key=scores.__getitem__) == doc["gold"]
        n += 1
    return right / n
"""


def _user_python(code: str, cwd: Path) -> dict:
    """``code`` in a fresh interpreter that cannot find the project (no PYTHONPATH, another folder)
    and checks at the end that it never imported it; it prints a JSON line last."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    code += "\nassert not [m for m in sys.modules if m.split('.')[0] in ('harness', 'methods', 'tasks', 'reports')]\n"
    done = subprocess.run([sys.executable, "-c", SCORE + code], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A fresh model cache: the exported base folder is written by the run itself."""
    monkeypatch.setenv("PEFT_BENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def lora(tmp_path_factory) -> tuple[Path, float, Path]:
    """One LoRA run for the tests that load its folder: the folder, its accuracy, a scratch folder."""
    tmp = tmp_path_factory.mktemp("lora")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PEFT_BENCH_CACHE", str(tmp / "cache"))
        folder, acc = _run("lora", tmp / "out")
    return folder, acc, tmp


def _run(method: str, out: Path) -> tuple[Path, float]:
    """``bench run`` a few steps on arc_e; the saved folder and the run's after-training accuracy."""
    rc = cli.main(["run", "--model", "tiny-llama", "--methods", method, "--tasks", "arc_e", "--max-steps", "3",
                   "--eval-limit", str(ITEMS), "--retention", "none", "--executor", "inline", "--no-progress",
                   "--set", "lr=0.01", "--out", str(out)])
    assert rc == 0
    (folder,) = (out / "runs").glob("*/adapter")
    rows = list(csv.DictReader((out / "results.csv").open()))
    (acc,) = [float(r["value"]) for r in rows if (r["task"], r["phase"], r["metric"]) == ("arc_e", "after", "acc")]
    return folder, acc


def _exported_items(folder: Path) -> tuple[Path, str, str]:
    """The run's test items of arc_e as lm-eval YAML (the bridge the lm-eval backend uses):
    the documents' path, the task name and the folder lm-eval's --include_path takes."""
    task = task_registry.get("arc_e")
    items = task_registry.load(task).test[:ITEMS]
    name, where = lm_eval_bridge.export(task, items, "likelihood", EvalSettings(), folder)
    return where / f"{name}.jsonl", name, str(where)


def _delimiter(task_yaml: Path) -> str:
    import yaml

    return yaml.safe_load(task_yaml.read_text())["target_delimiter"]


def test_lora_folder_loads_with_auto_peft_outside_the_project(lora, monkeypatch):
    folder, acc, tmp = lora
    monkeypatch.setenv("PEFT_BENCH_CACHE", str(tmp / "cache"))
    base = json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert Path(base) == tmp / "cache" / "tiny-llama" and (Path(base) / "config.json").is_file()
    assert f"pretrained={base},peft=DIR" in (folder / "README.md").read_text()
    assert resolve_model(str(folder)) == ("tiny-llama", str(folder))  # bench eval loads it as the run did
    docs, name, include = _exported_items(tmp / "tasks")
    delimiter = _delimiter(Path(include) / f"{name}.yaml")
    user = _user_python(
        "from peft import AutoPeftModelForCausalLM\nfrom transformers import AutoTokenizer\n"
        f"model = AutoPeftModelForCausalLM.from_pretrained({str(folder)!r}).eval()\n"
        "tok = AutoTokenizer.from_pretrained(model.peft_config['default'].base_model_name_or_path)\n"
        f"print(json.dumps(accuracy(model, tok, {str(docs)!r}, {delimiter!r})))", tmp)
    assert user == acc


@pytest.mark.slow
def test_lora_folder_scores_with_lm_eval_cli_peft(lora):
    folder, acc, tmp = lora
    base = json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
    _, name, include = _exported_items(tmp / "tasks")
    lm_eval = shutil.which("lm_eval", path=str(Path(sys.executable).parent))
    done = subprocess.run([lm_eval, "--model", "hf", "--model_args", f"pretrained={base},peft={folder}",
                           "--tasks", name, "--include_path", include, "--device", "cpu", "--batch_size", "8",
                           "--output_path", str(tmp / "lm-eval")], cwd=tmp, capture_output=True,
                          text=True, timeout=600, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert done.returncode == 0, done.stderr[-3000:]
    (result,) = (tmp / "lm-eval").rglob("results_*.json")
    assert json.loads(result.read_text())["results"][name]["acc,none"] == pytest.approx(acc, abs=1e-12)


def test_losia_delta_loads_with_the_saved_load_delta_outside_the_project(tmp_path, cache):
    old = os.umask(0o022)
    try:
        folder, acc = _run("losia", tmp_path / "out")
    finally:
        os.umask(old)
    # readable by colleagues as the umask allows: the saved folder and the exported base
    for path in [folder, *folder.rglob("*"), cache / "tiny-llama", *(cache / "tiny-llama").rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o755 if path.is_dir() else 0o644), (path, oct(mode))
    config = json.loads((folder / "delta_config.json").read_text())
    assert Path(config["base_model"]) == cache / "tiny-llama"
    assert {"delta.safetensors", "load_delta.py", "README.md"} <= {p.name for p in folder.iterdir()}
    docs, name, include = _exported_items(tmp_path / "tasks")
    delimiter = _delimiter(Path(include) / f"{name}.yaml")
    user = _user_python(  # what the model card and the README say, word for word
        "import sys\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n"
        f"sys.path.insert(0, {str(folder)!r})\nfrom load_delta import load_delta\n"
        f"model = load_delta(AutoModelForCausalLM.from_pretrained({config['base_model']!r}), {str(folder)!r}).eval()\n"
        f"tok = AutoTokenizer.from_pretrained({config['base_model']!r})\n"
        f"print(json.dumps(accuracy(model, tok, {str(docs)!r}, {delimiter!r})))", tmp_path)
    assert user == acc
