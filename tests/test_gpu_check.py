"""The CPU-side logic of `make gpu-check` (benchmarks/gpu_check.py): argument parsing, the choice of the GPU test
subset, reading pytest's output, the exit status, the report, and the no-GPU path. What needs a GPU (the build with
CUDA kernels, the tests, the timings) runs only there."""
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_check as gc  # noqa: E402

IDS = [
    "tests/test_neuron.py::test_options_match_reference[kind=lif-v_reset=None-cuda]",
    "tests/test_neuron.py::test_options_match_reference[kind=lif-v_reset=0.0-cuda]",
    "tests/test_neuron.py::test_options_match_reference[kind=plif-v_reset=None-cuda]",
    "tests/test_neuron.py::test_options_match_reference[kind=plif-v_reset=0.0-triton]",
    "tests/test_neuron.py::test_half_precision[float16-cuda]",
    "tests/test_neuron.py::test_half_precision[bfloat16-cuda]",
    "tests/test_neuron.py::test_half_precision[bfloat16-triton]",
    "tests/test_attention.py::test_gate_ops_match_reference[qk_token_attention-cuda]",
    "tests/test_attention.py::test_gate_ops_match_reference[qk_token_attention-triton]",
    "tests/test_attention.py::test_gate_ops_match_reference[spike_driven_attention-cuda]",
    "tests/test_attention_ssa.py::test_cuda_fused_kernel_rejects_what_it_cannot_hold",
]


def test_arguments_are_parsed_and_checked(tmp_path, capsys):
    args = gc.parse_args(["--out", str(tmp_path / "r"), "--jobs", "3", "--budget", "100"])
    assert args.out == tmp_path / "r" and args.jobs == 3 and args.budget == 100 and args.arch == "native"
    for bad in (["--jobs", "0"], ["--budget", "-1"], ["--wheels", str(tmp_path / "missing")], []):
        with pytest.raises(SystemExit) as exit_info:
            gc.parse_args((["--out", str(tmp_path)] if bad else []) + bad)
        assert exit_info.value.code == 2
    assert "--wheels" in capsys.readouterr().err


def test_the_subset_covers_every_function_operator_dtype_and_backend():
    chosen = gc.select_tests(IDS)
    assert len(chosen) < len(IDS) and len(set(chosen)) == len(chosen)
    covered = set().union(*(gc.test_features(t) for t in chosen))
    assert covered == set().union(*(gc.test_features(t) for t in IDS))
    functions = {t.split("[")[0] for t in chosen}
    assert functions == {t.split("[")[0] for t in IDS}
    assert {"op:lif", "op:plif", "op:qk_token_attention", "op:spike_driven_attention"} <= covered
    assert {"dtype:float16", "dtype:bfloat16", "backend:cuda", "backend:triton"} <= covered
    assert "op-backend:qk_token_attention|triton" in covered
    assert gc.select_tests(IDS) == chosen, "the choice is deterministic"
    assert len(gc.select_tests(IDS, limit=2)) == 2
    assert gc.select_tests([]) == []


def test_features_name_operators_dtypes_and_backends():
    feats = gc.test_features("tests/hardening/test_layouts.py::test_x[bipolar_lif-dtype0-cuda]")
    assert {"fn:tests/hardening/test_layouts.py::test_x", "op:bipolar_lif", "backend:cuda",
            "param:tests/hardening/test_layouts.py::test_x|dtype0"} <= feats
    assert "op:lif" not in feats  # bipolar_lif is not lif
    assert "op:experts_mixture" in gc.test_features("tests/test_experts_mixture.py::test_experts_mixture_matches")


def test_pytest_output_is_read_streamed_or_summarised():
    text = "\n".join([
        "tests/a.py::test_one[cuda] PASSED                                  [ 33%]",
        "tests/a.py::test_two[x-cuda] FAILED                                [ 66%]",
        "tests/b.py::test_three SKIPPED (no GPU)                            [100%]",
        "=========================== short test summary info ============================",
        "ERROR tests/c.py::test_four - RuntimeError: boom",
    ])
    outcomes = gc.parse_pytest_output(text)
    assert outcomes == {"tests/a.py::test_one[cuda]": "passed", "tests/a.py::test_two[x-cuda]": "failed",
                        "tests/b.py::test_three": "skipped", "tests/c.py::test_four": "error"}
    ids = list(outcomes) + ["tests/d.py::test_never"]
    summary = gc.summarize_tests(ids, outcomes, 1, False, 3.0)
    assert summary["failed"] == ["tests/a.py::test_two[x-cuda]", "tests/c.py::test_four"]
    assert summary["not_run"] == ["tests/d.py::test_never"] and summary["counts"]["passed"] == 1


def _result(**overrides):
    result = {"started": "now", "seconds": 1.0, "preflight": {"python": "3.12", "gpu": {
        "name": "NVIDIA H100", "capability": "9.0", "memory_gib": 80.0, "count": 1}, "problems": []}}
    result.update(overrides)
    return result


def _bench(impl, ok=True, gates=True, ms=1.0):
    return {"name": f"lif {impl} fwd float32 [4, 32, 256, 196]", "group": "lif", "impl": impl, "backward": False,
            "dtype": "float32", "shape": [4, 32, 256, 196], "status": "ok", "median_ms": ms, "min_ms": ms,
            "parity": {"mismatched_outputs": 0 if ok else 3, "outputs": 10, "ok": ok, "gates_exit": gates}}


def test_exit_status():
    passed = {"selected": 2, "counts": {"passed": 2}, "failed": [], "not_run": [], "exit": 0, "timed_out": False}
    assert gc.exit_code(_result(tests=passed, benchmarks=[_bench("spikeops:cuda")])) == gc.EXIT_OK
    assert gc.exit_code(_result(tests=dict(passed, failed=["t"], exit=1))) == gc.EXIT_FAILED
    assert gc.exit_code(_result(tests=dict(passed, exit=3))) == gc.EXIT_FAILED  # pytest internal error
    assert gc.exit_code(_result(tests=dict(passed, exit=None, timed_out=True))) == gc.EXIT_OK  # reported, not failed
    assert gc.exit_code(_result(benchmarks=[_bench("spikeops:cuda", ok=False)])) == gc.EXIT_FAILED
    # Another library's disagreement is reported, not a spikeops failure.
    assert gc.exit_code(_result(benchmarks=[_bench("spikingjelly:triton", ok=False, gates=False)])) == gc.EXIT_OK
    assert gc.exit_code(_result(setup_error="the build failed")) == gc.EXIT_SETUP


def test_report_is_written_as_markdown_and_json(tmp_path):
    result = _result(tests={"selected": 2, "pool": 5, "counts": {"passed": 1, "failed": 1}, "failed": ["tests/a.py::t"],
                            "not_run": [], "exit": 1, "timed_out": False},
                     benchmarks=[_bench("spikeops:cuda", ms=1.0), _bench("spikingjelly:triton", ms=2.5, gates=False),
                                 _bench("spikeops:triton", ok=False, ms=1.5)], exit=1)
    md, js = gc.write_report(tmp_path / "report", result)
    text = md.read_text()
    assert "NVIDIA H100" in text and "FAILED `tests/a.py::t`" in text and "| lif spikeops:cuda" in text
    assert "spikingjelly:triton 2.50x" in text and "## Parity failures" in text
    assert json.loads(js.read_text())["tests"]["failed"] == ["tests/a.py::t"]
    summary = gc.summary(result)
    assert "sm_90" in summary and "1 failed" in summary and "1 parity failures" in summary


def test_benchmark_plan_covers_the_issue():
    plan = gc.bench_plan()
    names = [gc.case_name(c) for c in plan]
    assert len(names) == len(set(names))
    lif = [c for c in plan if c["group"] == "lif" and list(c["shape"]) == [4, 32, 256, 196]]
    assert {c["backward"] for c in lif} == {False, True}
    assert {"spikingjelly:triton", "spikingjelly:cupy", "torch.compile", "spikeops:cuda", "spikeops:triton"} <= \
        {c["impl"] for c in lif}
    assert len({c["shape"][0] for c in plan if c["group"] == "lif_T"}) >= 4
    assert {c["op"] for c in plan if c["group"] == "attention"} == {
        "qk_token_attention", "qk_channel_attention", "spike_driven_attention", "spiking_self_attention",
        "bipolar_attention", "experts_mixture"}
    assert all(list(c["shape"]) == [4, 8, 384, 196] for c in plan if c["group"] == "attention")
    assert any(c["group"] == "model" for c in plan)


def test_benchmark_cases_run_on_cpu_and_check_parity():
    """The benchmark code itself, on CPU at tiny sizes (the GPU run uses the same functions)."""
    plan = [c for c in gc.bench_plan(tiny=True) if c["group"] != "model"
            and c["impl"] in ("spikeops:torch", "spikeops:cuda", "torch.compile", "spikingjelly:cupy")][:12]
    results = gc.run_benchmarks(plan, "cpu", deadline=float("inf"), min_time=0.0)
    by_impl = {}
    for r in results:
        by_impl.setdefault(r["impl"], []).append(r)
    assert all(r["status"] == "ok" and r["parity"]["ok"] for r in by_impl["spikeops:torch"])
    assert all(r["status"] == "unavailable" for r in by_impl["spikeops:cuda"])
    assert all(r["status"] == "error" and "CuPy" in r["why"] for r in by_impl["spikingjelly:cupy"])
    late = gc.run_benchmarks(plan[:1], "cpu", deadline=0.0, min_time=0.0)
    assert late[0]["status"] == "not run"


def test_without_a_gpu_it_says_so_and_exits_zero(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gc, "preflight", lambda: {"python": "3.11", "torch": "2.11.0", "gpu": None, "problems": []})
    assert gc.main(["--out", str(tmp_path)]) == gc.EXIT_OK
    out = capsys.readouterr().out
    assert "no CUDA GPU" in out and "exit 0" in out
    assert json.loads((tmp_path / "gpu_check.json").read_text())["note"] == "no GPU: nothing was checked"


def test_dry_run_plans_and_reports_without_a_gpu(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gc, "collect_tests", lambda env, timeout=300: list(IDS))
    assert gc.main(["--out", str(tmp_path), "--dry-run"]) == gc.EXIT_OK
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["dry_run"] and report["tests"]["pool"] == len(IDS)
    assert report["tests"]["ids"] == gc.select_tests(IDS)
    assert all(b["status"] == "planned" for b in report["benchmarks"])
    assert "dry run" in (tmp_path / "gpu_check.md").read_text()
    assert gc.main(["--out", str(tmp_path), "--list-tests"]) == gc.EXIT_OK
    assert capsys.readouterr().out.count("tests/") >= len(gc.select_tests(IDS))


def test_set_up_problems_stop_before_building(tmp_path, monkeypatch):
    gpu = {"name": "X", "capability": "7.5", "memory_gib": 16.0, "count": 1}
    monkeypatch.setattr(gc, "preflight", lambda: {"python": "3.12", "torch": "2.9.0", "gpu": gpu,
                                               "problems": ["torch 2.9.0 < 2.11"]})
    monkeypatch.setattr(gc, "build", lambda *a, **k: pytest.fail("must not build"))
    assert gc.main(["--out", str(tmp_path)]) == gc.EXIT_SETUP
    assert "torch 2.9.0 < 2.11" in (tmp_path / "gpu_check.md").read_text()


def test_arch_list_and_versions():
    assert gc.arch_list("native", "9.0") == "9.0"
    assert gc.arch_list("default", "9.0") is None
    assert gc.arch_list("8.0;9.0+PTX", "12.0") == "8.0;9.0+PTX"
    assert gc.version_tuple("2.11.0+cu128") == (2, 11, 0) and gc.version_tuple("3.6.0") >= (3, 6)
    assert gc.version_tuple(None) == ()


def test_the_preinstalled_library_api_it_relies_on_exists():
    """What spikeops registers its operators with exists in this torch (the GPU check verifies it on the target
    machine's torch too, in preflight)."""
    import torch

    for name in ("custom_op", "register_fake", "opcheck", "register_autograd"):
        assert hasattr(torch.library, name), name
    assert gc.api_warnings(torch) == []
    info = gc.preflight()
    assert info["problems"] == [] or all("Python" not in p for p in info["problems"])


def test_a_machine_without_torch_is_a_set_up_failure(tmp_path, monkeypatch):
    monkeypatch.setattr(gc, "preflight", lambda: {"python": "3.12", "gpu": None,
                                                  "problems": ["torch is not importable: No module named 'torch'"]})
    assert gc.main(["--out", str(tmp_path)]) == gc.EXIT_SETUP
    assert "torch is not importable" in (tmp_path / "gpu_check.md").read_text()
