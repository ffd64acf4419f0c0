"""What a long run shows while it trains: one line per epoch with the ETA, and quarter marks within an epoch."""

from __future__ import annotations

import re

from rstn.progress import QuarterProgress, counted


def test_quarter_marks_within_an_epoch(capsys):
    progress = QuarterProgress(8, "paper/rnn-spn-d4/seed0 epoch 3")
    for _ in range(8):
        progress.update()
    lines = capsys.readouterr().out.splitlines()
    assert [re.search(r"(\d+)% \((\d+)/8 batches", line).groups() for line in lines] == \
        [("25", "2"), ("50", "4"), ("75", "6")]
    assert all(line.startswith("paper/rnn-spn-d4/seed0 epoch 3: ") and " left)" in line for line in lines)


def test_no_marks_for_epochs_of_fewer_than_four_batches(capsys):
    progress = QuarterProgress(3, "x")
    for _ in range(3):
        progress.update()
    assert capsys.readouterr().out == ""


def test_counted_uses_the_singular_for_one_only():
    assert [counted(n, "epoch") for n in (0, 1, 2)] == ["0 epochs", "1 epoch", "2 epochs"]
