"""Progress in a log file: one line per bar (plus one a minute for long ones), never each redraw twice."""
from __future__ import annotations

from tasks import progress


def test_a_bar_in_a_log_prints_one_line(capsys):
    with progress.bar(total=3, desc="arc_e", unit="seq") as bar:
        for _ in range(3):
            bar.update()
    err = capsys.readouterr().err
    assert "\r" not in err and err.count("\n") == 1 and err.startswith("arc_e: 3/3 seq in ")


def test_an_iterated_bar_prints_its_postfix_once_at_the_end(capsys):
    bar = progress.bar(range(4), desc="train", unit="step")
    for i in bar:
        bar.set_postfix(loss=f"{i:.3f}", refresh=False)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("train: 4/4 step in ") and lines[0].endswith("loss=3.000")


def test_a_long_bar_adds_periodic_lines(capsys, monkeypatch):
    now = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    with progress.bar(total=4, desc="hellaswag", unit="seq") as bar:
        for t in (61.0, 62.0, 130.0, 131.0):  # a line at 61 s, none at 62 s (a minute not gone), one at 130 s
            now[0] = t
            bar.update()
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" in ")[0] for line in lines] == ["hellaswag: 1/4 seq", "hellaswag: 3/4 seq", "hellaswag: 4/4 seq"]


def test_a_disabled_bar_prints_nothing(capsys):
    for _ in progress.bar(range(3), desc="x", disable=True):
        pass
    assert capsys.readouterr().err == ""
