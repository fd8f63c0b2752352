"""Static GPU checks that need no GPU: every Triton kernel (compiled ahead of time for sm_90, and for sm_80
in a Triton-only pass) and every CUDA kernel (nvcc -cubin -Xptxas -v on each csrc/<op>/*.cu, cached under
build/static_gpu/) is free of register spills, and the fused neuron kernels move their per-step tensors
with vector accesses when N is divisible by 16. ptxas' own spill counters are used because the cubins in the
built extension only report local memory, which also counts deliberate per-thread arrays.

The analysis (benchmarks/static_gpu.py) runs once per session in a subprocess: this test session
sets TRITON_INTERPRET=1, which turns @triton.jit functions into uncompilable Python ones."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import static_gpu

REPO = Path(__file__).resolve().parent.parent
ARCH = 90


@pytest.fixture(scope="session")
def analysis(tmp_path_factory):
    if static_gpu.triton_tool("ptxas") is None or static_gpu.triton_tool("cuobjdump") is None:
        pytest.skip("triton's ptxas/cuobjdump are not installed")
    out = tmp_path_factory.mktemp("static_gpu") / "static.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-m", "benchmarks.static_gpu", "--arch", str(ARCH), "--cuda-source",
                           "nvcc", "--json", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="session")
def triton_sm80(tmp_path_factory):
    """The Triton rows for sm_80 only (the CUDA kernels are checked on sm_90 above)."""
    if static_gpu.triton_tool("ptxas") is None:
        pytest.skip("triton's ptxas is not installed")
    out = tmp_path_factory.mktemp("static_gpu_sm80") / "triton.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    script = ("import json, sys; from benchmarks import static_gpu as s; "
              "rows = s.triton_rows(s.discover_triton_specs(), (80,)); "
              "open(sys.argv[1], 'w').write(json.dumps(rows, default=str))")
    done = subprocess.run([sys.executable, "-c", script, str(out)], cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(out.read_text())


def _loop_accesses(row):
    return [size for loop in row["loops"] for size in loop["loads"] + loop["stores"]]


def test_every_aot_spec_compiles_and_neuron_kernels_are_listed(analysis):
    names = {row["kernel"] for row in analysis["triton"]}
    for pass_ in ("forward", "backward"):
        for neuron in ("lif", "plif"):
            for dtype in ("fp32", "bf16"):
                assert f"neuron_{pass_} {neuron} {dtype}" in names


def test_triton_kernels_do_not_spill(analysis):
    spilling = {row["kernel"]: row["spill_bytes"] for row in analysis["triton"] if row["spill_bytes"] != 0}
    assert not spilling, f"Triton kernels with spills (or no ptxas report) on sm_{ARCH}: {spilling}"


def test_triton_kernels_do_not_spill_on_sm80(triton_sm80):
    assert triton_sm80
    spilling = {row["kernel"]: row["spill_bytes"] for row in triton_sm80 if row["spill_bytes"] != 0}
    assert not spilling, f"Triton kernels with spills (or no ptxas report) on sm_80: {spilling}"


def test_cuda_kernels_do_not_spill(analysis):
    if not analysis["cuda"]:
        pytest.skip(f"CUDA kernels {analysis['cuda_note']}")
    spilling = {(row["unit"], row["kernel"]): row["spill_bytes"] for row in analysis["cuda"] if row["spill_bytes"] != 0}
    assert not spilling, f"CUDA kernels with spills on sm_{ARCH}: {spilling}"


def test_elementwise_cuda_kernels_keep_everything_in_registers(analysis):
    """The neuron and spike-gate kernels hold no per-thread arrays, so any stack frame would be a spill in
    disguise. (The bipolar-attention CUDA kernels keep a per-thread row buffer on the stack by design.)"""
    rows = [row for row in analysis["cuda"] if row["unit"] in ("neuron_cuda.cu", "spike_gate_cuda.cu")]
    if not rows:
        pytest.skip(f"CUDA kernels {analysis['cuda_note']}")
    on_stack = {(row["unit"], row["kernel"]): row["stack_bytes"] for row in rows if row["stack_bytes"] != 0}
    assert not on_stack, f"CUDA kernels with a stack frame on sm_{ARCH}: {on_stack}"


def test_triton_neuron_kernels_use_vector_accesses_in_the_time_loop(analysis):
    rows = [row for row in analysis["triton"] if row["unit"] == "neuron"]
    assert rows
    for row in rows:
        assert row["loops"], f"{row['kernel']}: no time loop found in the PTX"
        scalar = [size for size in _loop_accesses(row) if size < 8]
        assert not scalar, f"{row['kernel']}: per-step global accesses narrower than v2.b32: {row['loops']}"


@pytest.mark.parametrize("neuron", ["lif", "plif"])
def test_triton_lif_moves_only_x_spikes_and_gradients(analysis, neuron):
    """Forward reads x and writes the spikes; backward reads x and grad_spikes and writes grad_x, H, the
    spikes and (PLIF) the leak gradient's x kept in registers: no H buffer, 20 B (float32) / 10 B (bfloat16)
    per neuron-step for T up to the backward's register chunk. Longer T re-reads only x, to rebuild a chunk's
    starting membrane."""
    rows = {row["kernel"]: row for row in analysis["triton"]}
    for dtype, size in (("fp32", 4), ("bf16", 2)):
        forward, backward = rows[f"neuron_forward {neuron} {dtype}"], rows[f"neuron_backward {neuron} {dtype}"]
        assert forward["bytes_per_neuron_step"] == 2 * size, forward["loops"]
        assert backward["bytes_per_neuron_step"] == 3 * size, backward["loops"]
        assert list(backward["conditional_bytes_per_step"].values()) == [size], backward["loops"]


def test_cuda_vectorised_neuron_kernels_issue_128_bit_accesses_every_step(analysis):
    rows = [row for row in analysis["cuda"]
            if row["unit"] == "neuron_cuda.cu" and "_kernel<" in row["kernel"] and row["elements_per_thread"] > 1]
    if not rows:
        pytest.skip(f"no vectorised CUDA kernels analysed ({analysis['cuda_note']})")
    for row in rows:
        for loop in row["loops"]:
            assert 16 in loop["loads"] + loop["stores"], f"{row['kernel']}: a time loop without 128-bit access: {loop}"


# ---------------------------------------------------------------- the parsers, on hand-written assembly
PTX = """
\t@%p1 ld.global.v4.b32 { %r1, %r2, %r3, %r4 }, [ %rd1 + 0 ];
$L__BB0_2:
\t@%p1 ld.global.v4.b32 { %r5, %r6, %r7, %r8 }, [ %rd2 + 0 ];
\t@%p1 ld.global.v2.b32 { %r9, %r10 }, [ %rd3 + 0 ];
\t@%p2 st.global.b16 [ %rd4 + 0 ], %rs1;
\t@%p3 bra $L__BB0_2;
\tst.global.v4.b32 [ %rd5 + 0 ], { %r1, %r2, %r3, %r4 };
"""


def test_ptx_analysis_counts_only_the_loop_body_with_vector_widths():
    result = static_gpu.analyse_ptx(PTX)
    assert len(result["loops"]) == 1
    loop = result["loops"][0]
    assert loop["loads"] == [16, 8] and loop["stores"] == [2]
    assert loop["bytes_per_thread"] == 26
    assert len(result["all_accesses"]) == 5


def test_sass_analysis_divides_unrolled_loops():
    body = ["        /*0100*/                   LDG.E.128 R4, desc[UR4][R2.64] ;",
            "        /*0110*/                   STG.E.U8 desc[UR4][R6.64], R8 ;"]
    lines = body + [line.replace("0100", "0120").replace("0110", "0130") for line in body]
    lines.append("        /*0140*/              @P0 BRA 0x100 ;")
    loop = static_gpu.analyse_sass(lines)["loops"][0]
    assert loop["unrolled"] == 2
    assert loop["loads"] == [16] and loop["stores"] == [1]


def test_ptxas_log_parser_reads_registers_and_spills():
    log = ("ptxas info    : Compiling entry function 'k' for 'sm_90a'\n"
           "ptxas info    : Function properties for k\n"
           "    8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads\n"
           "ptxas info    : Used 40 registers, used 1 barriers\n")
    assert static_gpu.parse_ptxas(log) == {"k": dict(registers=40, stack_bytes=8, spill_store_bytes=4,
                                                     spill_load_bytes=12)}


# A chunked time loop as the neuron backward compiles: each iteration moves two steps (x twice, then
# grad_spikes and grad_x twice), and a loop nested in it re-reads x, one step an iteration, for some T only.
NESTED_PTX = """
\tld.global.b32 { %r1 }, [ %rd1 + 0 ];
$L__BB0_1:
$L__BB0_2:
\t@%p1 ld.global.v4.b32 { %r5, %r6, %r7, %r8 }, [ %rd2 + 0 ];
\t@%p2 bra $L__BB0_2;
\t@%p1 ld.global.v4.b32 { %r5, %r6, %r7, %r8 }, [ %rd3 + 0 ];
\t@%p1 ld.global.v4.b32 { %r5, %r6, %r7, %r8 }, [ %rd4 + 0 ];
\t@%p1 ld.global.v4.b32 { %r5, %r6, %r7, %r8 }, [ %rd5 + 0 ];
\t@%p1 st.global.v4.b32 [ %rd6 + 0 ], { %r5, %r6, %r7, %r8 };
\t@%p1 ld.global.v4.b32 { %r5, %r6, %r7, %r8 }, [ %rd7 + 0 ];
\t@%p1 st.global.v4.b32 [ %rd8 + 0 ], { %r5, %r6, %r7, %r8 };
\t@%p3 bra $L__BB0_1;
\tst.global.v4.b32 [ %rd9 + 0 ], { %r1, %r2, %r3, %r4 };
"""
CHUNKED = dict(time_loops=(dict(steps=2), dict(steps=1, only_when="T > 2")))


def test_declared_time_loops_divide_by_steps_and_keep_a_nested_recompute_apart():
    row = static_gpu._row("triton", "m", "k", 90, {}, static_gpu.analyse_ptx(NESTED_PTX), 4, CHUNKED)
    outer, inner = row["loops"]
    assert (outer["depth"], outer["loads"], outer["stores"]) == (0, [16] * 4, [16] * 2)
    assert (inner["depth"], inner["loads"], inner["stores"]) == (1, [16], [])
    assert row["bytes_per_neuron_step"] == 96 / 2 / 4
    assert row["conditional_bytes_per_step"] == {"T > 2": 16 / 4}


def test_declared_time_loops_must_match_the_ptx():
    with pytest.raises(RuntimeError, match="declares 1 nested time loops"):
        static_gpu._row("triton", "m", "k", 90, {}, static_gpu.analyse_ptx(NESTED_PTX), 4,
                        dict(time_loops=(dict(steps=2),)))


def test_a_kernel_without_a_loop_is_counted_over_its_declared_steps():
    straight = "\n".join(line for line in NESTED_PTX.splitlines() if "L__BB" not in line)
    row = static_gpu._row("triton", "m", "k", 90, {}, static_gpu.analyse_ptx(straight), 4,
                          dict(steps_without_loop=4))
    assert row["bytes_per_neuron_step"] == (4 + 16 * 8) / 4 / 4
    assert "no loop: T = 4" in static_gpu._loop_text(row["loops"])
