"""benchmarks/paired_speed.py: rounds rotate their order, ratios are per round, processes pool (no timing
asserted)."""
import json

import pytest

from benchmarks import paired_speed
from benchmarks.paired_speed import FLOOR, OURS, THEIRS, Rounds, markdown, pooled, time_rounds


def test_rounds_rotate_and_count():
    calls = []
    contenders = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    result = time_rounds("x", contenders, rounds=4, warmup=1)
    assert calls == list("abc") + list("abc") + list("bca") + list("cab") + list("abc")
    assert {name: len(s) for name, s in result.seconds.items()} == {"a": 4, "b": 4, "c": 4}
    assert all(t >= 0 for s in result.seconds.values() for t in s)


def test_ratio_is_the_median_of_per_round_ratios():
    """Rounds (1, 2), (2, 2), (4, 2), (1, 3), (2, 3): per-round ratios 2, 1, 0.5, 3, 1.5, median 1.5, while the
    ratio of the medians would be 2 / 2 = 1."""
    rounds = Rounds("forward", {OURS: [1e-3, 2e-3, 4e-3, 1e-3, 2e-3], THEIRS: [2e-3, 2e-3, 2e-3, 3e-3, 3e-3]})
    assert rounds.ratios() == [2.0, 1.0, 0.5, 3.0, 1.5]
    row = rounds.row()
    assert row.startswith("| forward | 2 | 2 | **1.50×** |") and row.endswith("| – | – | 5 |")
    assert markdown([rounds]).splitlines()[2] == row


def test_floor_column_is_the_median_of_floor_over_spikeops():
    rounds = Rounds("forward", {OURS: [1e-3, 2e-3, 4e-3], THEIRS: [1e-3, 2e-3, 4e-3], FLOOR: [2e-3, 1e-3, 4e-3]})
    assert rounds.row().endswith("| 2 (1.00×) | 3 |")  # floor ratios 2, 0.5, 1: median 1


def test_pooled_joins_processes_and_keeps_each_median():
    runs = iter([
        [Rounds("forward", {OURS: [1.0, 1.0, 1.0], THEIRS: [2.0, 2.0, 0.5]})],   # ratios 2, 2, 0.5: median 2
        [Rounds("forward", {OURS: [1.0, 2.0], THEIRS: [0.5, 0.5]})],             # ratios 0.5, 0.25: median 0.375
    ])
    (joined,) = pooled(2, lambda: next(runs))
    assert joined.seconds[OURS] == [1.0, 1.0, 1.0, 1.0, 2.0] and joined.seconds[THEIRS] == [2.0, 2.0, 0.5, 0.5, 0.5]
    assert joined.process_ratios == [2.0, 0.375]
    assert "| 0.38–2.00 (2) |" in joined.row()


def test_fresh_process_rounds_reads_the_child_json(monkeypatch):
    """The parent runs ``--child`` in a new interpreter and rebuilds the rounds from the JSON line it prints last."""
    seen = {}

    class Done:
        stdout = "a warning on stdout\n" + json.dumps({"forward": {OURS: [1.0], THEIRS: [2.0]}})

    def run(cmd, **kwargs):
        seen["cmd"] = cmd
        return Done()

    monkeypatch.setattr(paired_speed.subprocess, "run", run)
    (rounds,) = paired_speed.fresh_process_rounds(7)
    assert seen["cmd"][1:] == ["-m", "benchmarks.paired_speed", "--child", "--rounds", "7"]
    assert rounds.label == "forward" and rounds.ratios() == [2.0]


@pytest.mark.parametrize("argv", [["--processes", "0", "--rounds", "2"]])
def test_in_process_run_prints_both_headline_rows(argv, capsys):
    """One real (tiny) run: both rows, every column filled where it applies, in this process."""
    paired_speed.main(argv)
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].startswith("| forward |") and "×)" in lines[2] and lines[2].endswith("| 2 |")
    assert lines[3].startswith("| forward+backward |") and lines[3].endswith("| – | 5 |")
