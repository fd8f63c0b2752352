"""The command lines: `python -m spikeops.energy` answers bad arguments with argparse errors (no traceback) and
reports progress on stderr; `python -m spikeops.info` reports versions, the build, backends and kernels."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from spikeops import info
from spikeops.energy.__main__ import main as energy_main

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("argv, message", [
    (["no_such_model"], "unknown model 'no_such_model'"),
    (["qkformer_hst_4_38"], "did you mean qkformer_hst_4_384"),
    (["qkformer_hst_4_384", "-T", "0"], "-T/--time-steps: expected a positive integer, got 0"),
    (["qkformer_hst_4_384", "--e-ac", "nan"], "--e-ac: expected a finite number >= 0"),
    (["qkformer_hst_4_384", "--backend", "gpu"], "invalid choice: 'gpu'"),
    (["qkformer_hst_4_384", "--qann-bit-sparsity", "2"], "expected a fraction in [0, 1]"),
    ([], "a model name is required"),
])
def test_energy_command_line_errors_are_argparse_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        energy_main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_energy_command_line_reports_progress_on_stderr(capsys):
    assert energy_main(["spikingjelly:sew_resnet18", "-T", "1", "--image-size", "16"]) == 0
    captured = capsys.readouterr()
    assert "spikeops.energy: building spikingjelly:sew_resnet18" in captured.err and "done in" in captured.err
    assert "spikeops.energy:" not in captured.out and "conventional SNN" in captured.out


def test_info_reports_versions_build_backends_and_kernels(capsys):
    assert info.main([]) == 0
    text = capsys.readouterr().out
    for heading in ("versions", "install ", "extension", "backends", "on cpu: auto ->", "Triton kernel modules"):
        assert heading in text
    assert info.main(["--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["versions"]["torch"] and "cpu" in report["backends"]
    assert report["backends"]["cpu"]["torch"] is None  # the reference always runs
    assert set(report["triton_kernels"]) >= {"neuron", "spike_gate"}


def test_info_runs_as_a_module():
    out = subprocess.run([sys.executable, "-m", "spikeops.info"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("spikeops ")
