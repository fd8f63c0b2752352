"""spikeops.convert on SpikingJelly 0.0.0.0.14 (the legacy line: ``clock_driven`` and an early
``activation_based`` without SimpleBaseNode / NonSpikingBaseNode). It runs in a subprocess with
0.0.0.0.14 installed (no dependencies) into a private target directory from a local wheel: the wheel at
$SPIKEOPS_SJ014_WHEEL or /tmp/sj014/spikingjelly-0.0.0.0.14-py3-none-any.whl, or an existing install at
$SPIKEOPS_SJ014_TARGET. No network is used; without any of them the test is skipped saying so."""
import glob
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEFAULT_WHEEL_GLOB = "/tmp/sj014/spikingjelly-0.0.0.0.14-*.whl"


@pytest.fixture(scope="module")
def sj014(tmp_path_factory):
    target = os.environ.get("SPIKEOPS_SJ014_TARGET")
    if target and (Path(target) / "spikingjelly" / "clock_driven").is_dir():
        return target
    wheels = [os.environ["SPIKEOPS_SJ014_WHEEL"]] if os.environ.get("SPIKEOPS_SJ014_WHEEL") else \
        sorted(glob.glob(DEFAULT_WHEEL_GLOB))
    if not wheels or not Path(wheels[0]).is_file():
        pytest.skip("SpikingJelly 0.0.0.0.14 is not available offline: set SPIKEOPS_SJ014_WHEEL to its wheel or "
                    f"SPIKEOPS_SJ014_TARGET to a --target install (looked for {DEFAULT_WHEEL_GLOB})")
    target = tmp_path_factory.mktemp("sj014")
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet",
                             "--target", str(target), wheels[0]], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return str(target)


SCRIPT = textwrap.dedent("""
    import json, warnings
    warnings.simplefilter("ignore")
    import torch
    import spikingjelly, spikeops
    from spikingjelly.clock_driven import neuron as cn, surrogate as cs, layer as cl, functional as cf
    from spikingjelly.activation_based import neuron as an
    assert spikingjelly.__file__.startswith(TARGET), spikingjelly.__file__
    assert not hasattr(an, "SimpleBaseNode")  # the 0.0.0.0.14 activation_based line

    def model():
        torch.manual_seed(0)
        return torch.nn.Sequential(
            torch.nn.Linear(4, 8),
            cn.MultiStepLIFNode(tau=2.0, detach_reset=True, backend="torch"),
            torch.nn.Linear(8, 8),
            cn.MultiStepParametricLIFNode(init_tau=3.0, surrogate_function=cs.ATan()),
            torch.nn.Linear(8, 8),
            cn.MultiStepIFNode(v_reset=None, v_threshold=0.5),
            torch.nn.Linear(8, 8),
            cl.MultiStepContainer(cn.LIFNode(tau=1.5, decay_input=False)),
            torch.nn.Linear(8, 8),
            an.LIFNode(step_mode="m", detach_reset=True),
            torch.nn.Linear(8, 3),
        )

    def run(net, x):
        out = []
        for _ in range(2):
            cf.reset_net(net)
            net.zero_grad()
            xx = x.clone().requires_grad_(True)
            y = net(xx)
            (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
            out.append((y.detach(), xx.grad, [p.grad.clone() for p in net.parameters()]))
        return out

    x = torch.rand(6, 5, 4) * 3
    ref = model()
    converted, report = spikeops.convert(model(), backend=BACKEND)
    a, b = run(ref, x), run(converted, x)
    diff = max(max((ya - yb).abs().max().item(), (ga - gb).abs().max().item(),
                   max((p - q).abs().max().item() for p, q in zip(pa, pb)))
               for (ya, ga, pa), (yb, gb, pb) in zip(a, b))
    spikes = sum(m.v_seq is not None for m in converted.modules() if isinstance(m, spikeops.BaseNeuron))

    odd = torch.nn.Sequential(cn.QIFNode(), cn.MultiStepEIFNode(), cn.MultiStepLIFNode())
    _, odd_report = spikeops.convert(odd)
    try:
        spikeops.convert(odd, strict=True)
        strict = "no error"
    except spikeops.ConversionError as error:
        strict = str(error)
    print(json.dumps(dict(
        replaced=[(r.name, r.source, r.target) for r in report.replaced],
        left_alone=[(s.name, s.source, s.reason) for s in report.left_alone],
        odd_left_alone=[(s.name, s.source, s.reason) for s in odd_report.left_alone],
        odd_replaced=[(r.name, r.source) for r in odd_report.replaced],
        strict=strict, diff=diff, out_abs=a[0][0].abs().sum().item(), v_seq_kept=spikes,
        no_spikeops_left=all(not type(m).__module__.startswith("spikingjelly") for m in converted.modules()
                             if "Node" in type(m).__name__))))
""")


@pytest.mark.parametrize("backend", ["cpu", "triton"])
def test_convert_on_spikingjelly_0_0_0_0_14(sj014, backend):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([sj014, str(REPO)]), TRITON_INTERPRET="1")
    code = f"TARGET = {sj014!r}; BACKEND = {backend!r}\n" + SCRIPT
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600,
                            cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["replaced"] == [["1", "MultiStepLIFNode", "LIF"], ["3", "MultiStepParametricLIFNode", "PLIF"],
                                ["5", "MultiStepIFNode", "IF"], ["7.0", "LIFNode", "LIF"], ["9", "LIFNode", "LIF"]]
    assert info["left_alone"] == []
    assert info["no_spikeops_left"]
    assert info["diff"] < 1e-5 and info["out_abs"] > 0
    assert info["v_seq_kept"] == 3  # the legacy multi-step neurons' v_seq is kept, as the legacy classes keep it
    assert [s[:2] for s in info["odd_left_alone"]] == [["0", "QIFNode"], ["1", "MultiStepEIFNode"]]
    assert "no spikeops equivalent" in info["odd_left_alone"][0][2]
    assert info["odd_replaced"] == [["2", "MultiStepLIFNode"]]
    assert "QIFNode" in info["strict"] and "MultiStepEIFNode" in info["strict"]
