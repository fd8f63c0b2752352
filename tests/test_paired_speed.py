"""benchmarks/paired_speed.py: pairs alternate their order, ratios are per pair (no timing asserted)."""
from benchmarks.paired_speed import Paired, markdown, time_pairs


def test_pairs_alternate_and_count():
    calls = []
    result = time_pairs("x", lambda: calls.append("ours"), lambda: calls.append("theirs"), rounds=4, warmup=1)
    assert calls == ["ours", "theirs"] + ["ours", "theirs", "theirs", "ours"] * 2
    assert len(result.ours_s) == len(result.theirs_s) == 4 and all(t >= 0 for t in result.ours_s)


def test_ratio_is_the_median_of_per_pair_ratios():
    """Pairs (1, 2), (2, 2), (4, 2), (1, 3), (2, 3): per-pair ratios 2, 1, 0.5, 3, 1.5, median 1.5, while the ratio
    of the medians would be 2 / 2 = 1."""
    paired = Paired("forward", [1e-3, 2e-3, 4e-3, 1e-3, 2e-3], [2e-3, 2e-3, 2e-3, 3e-3, 3e-3])
    assert paired.ratios == [2.0, 1.0, 0.5, 3.0, 1.5]
    row = paired.row()
    assert row.startswith("| forward | 2 | 2 | **1.50×** |") and row.endswith("| 5 |")
    assert markdown([paired]).splitlines()[2] == row
