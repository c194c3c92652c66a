"""The summary printed after bench run: 120 columns at most, suites named as suites, intervals shown."""
from __future__ import annotations

import pandas as pd

from reports import summary

SUITE = ["boolq", "piqa", "siqa", "hellaswag", "winogrande", "arc_e", "arc_c", "obqa"]


def tidy(methods: tuple[str, ...], tasks: list[str], n: int = 100) -> pd.DataFrame:
    """The tidy table's rows of one finished run per method trained on ``tasks``: acc before and after, costs."""
    rows = []
    for method in methods:
        run = {"run_id": f"m__{method}", "model": "m", "method": method, "train_tasks": "+".join(tasks), "seed": 0,
               "status": "ok", "n": n}
        rows += [{**run, "task": t, "phase": phase, "metric": "acc", "value": 0.456, "stderr": 0.05}
                 for t in tasks for phase in ("before", "after")]
        rows += [{**run, "task": run["train_tasks"], "phase": "train", "metric": m, "value": v, "stderr": None}
                 for m, v in (("step_time_s", 1.5), ("peak_rss_bytes", 2**32), ("trainable_params", 9_768_960),
                              ("trainable_pct", 7.26))]
    return pd.DataFrame(rows)


def test_the_main_jobs_summary_fits_120_columns_and_names_the_suite():
    df = tidy(("losia", "lora"), SUITE)
    text = summary.summary_table(df, near_chance={("m", t) for t in SUITE}, suites={"commonsense": SUITE})
    lines = text.splitlines()
    assert max(map(len, lines)) <= summary.WIDTH
    runs = [line for line in lines if line.startswith(("losia ", "lora "))]
    assert len(runs) == 4 and all(" commonsense " in line for line in runs)  # accuracy and cost rows
    base = next(line for line in lines if line.startswith(summary.BASE))
    assert base.count("‡") == len(SUITE) and base.count("±") == len(SUITE)


def test_a_table_too_wide_is_split_into_column_groups_that_fit():
    header = ["method", *[f"task{i:02d}" for i in range(30)]]
    text = summary.fit(header, [["lora", *["55.0±9.8"] * 30]], keys=1, width=60)
    blocks = text.split("\n\n")
    assert len(blocks) > 1 and max(map(len, text.splitlines())) <= 60
    assert all(b.startswith("method") for b in blocks) and text.count("55.0±9.8") == 30


def test_trained_label():
    suites = {"commonsense": SUITE, "math": ["gsm8k", "addsub"]}
    assert summary.trained_label("+".join(reversed(SUITE)), suites) == "commonsense"
    assert summary.trained_label("boolq+piqa", suites) == "boolq+piqa"
