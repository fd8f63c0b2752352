"""Every Python code block of README.md runs (each on its own, as a reader would paste it), and the energy table in
the README is what `python -m spikeops.energy qkformer_hst_4_384 -T 4` prints, so neither can rot unnoticed."""
import re
import warnings
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
ENERGY_COMMAND = "$ python -m spikeops.energy qkformer_hst_4_384 -T 4"


def python_blocks():
    text = README.read_text()
    blocks = []
    for match in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M):
        line = text.count("\n", 0, match.start()) + 2
        blocks.append(pytest.param(match.group(1), id=f"README.md:{line}"))
    return blocks


def test_the_readme_has_python_blocks():
    assert len(python_blocks()) >= 3


@pytest.mark.parametrize("code", python_blocks())
def test_readme_python_block_runs(code, request, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile(code, request.node.callspec.id, "exec"), {"__name__": "__readme__"})
    capsys.readouterr()


def _table_rows(text):
    """[(words, numbers)] per line: labels compared exactly, numbers within rounding of the last printed digit."""
    rows = []
    for line in text.strip().splitlines():
        tokens = line.split()
        numbers = [float(t) for t in tokens if re.fullmatch(r"-?\d+(\.\d+)?", t)]
        words = [t for t in tokens if not re.fullmatch(r"-?\d+(\.\d+)?", t)]
        rows.append((words, numbers))
    return rows


def test_readme_energy_table_is_what_the_command_prints(capsys):
    from spikeops.energy.__main__ import main

    text = README.read_text()
    start = text.index(ENERGY_COMMAND + "\n") + len(ENERGY_COMMAND) + 1
    documented = text[start:text.index("```", start)]
    assert main(["qkformer_hst_4_384", "-T", "4"]) == 0
    printed = capsys.readouterr().out
    want, got = _table_rows(documented), _table_rows(printed)
    assert [w for w, _ in want] == [w for w, _ in got], "the README's energy table has other rows or labels than the " \
        "command prints: paste the output of `python -m spikeops.energy qkformer_hst_4_384 -T 4` into README.md"
    for (words, a), (_, b) in zip(want, got):
        assert len(a) == len(b) and all(abs(x - y) <= 1e-3 * max(1.0, abs(x)) for x, y in zip(a, b)), \
            f"README energy row {' '.join(words)!r}: {a} documented, {b} printed"
