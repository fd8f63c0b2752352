"""spikeops.energy: operation counts against an independent counter, hand-computed energy, firing rates
against directly counted spikes, multi-bit spikes, the attention hooks, exports and the command line."""
import csv
import io
import json

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import spikeops
import spikeops.models
from spikeops import energy
from spikeops.energy import ConventionalEnergy, UnifiedEnergy, count_matmul, profile
from spikeops.energy.__main__ import main as cli_main
from spikeops.energy.attention_counters import qk_attention_counts, ssa_counts
from spikeops.energy.hooks import counted

sj_neuron = pytest.importorskip("spikingjelly.activation_based.neuron")
from spikingjelly.activation_based import model as sj_model  # noqa: E402

COMPUTE_KINDS = ("conv1d", "conv2d", "linear", "matmul")


class TimeFlat(nn.Module):
    """Applies a stateless layer to [T, B, ...] as [T*B, ...]."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return self.layer(x.flatten(0, 1)).unflatten(0, x.shape[:2])


def dense_macs_per_sample(report):
    return sum(layer.flops * layer.time_steps for layer in report.layers if layer.kind in COMPUTE_KINDS)


def flop_counter_macs(model, x, batch):
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() / 2 / batch  # FlopCounterMode counts a multiply-accumulate as 2 FLOPs


# --- FLOP counts against torch's FlopCounterMode on the dense model ---------------------------------------

def _spikeops_spikformer():
    return spikeops.models.Spikformer(T=2, embed_dim=64, num_heads=4, depth=2, num_classes=10, backend="torch")


def _spikeops_qkformer():
    return spikeops.models.QKFormer(T=2, embed_dim=64, num_heads=2, depths=(1, 1, 1), num_classes=10,
                                    imagenet=False, backend="torch")


def _spikingjelly_spikformer():
    return sj_model.Spikformer(T=2, img_size_h=32, img_size_w=32, patch_size=4, num_classes=10, embed_dims=64,
                               num_heads=4, depths=2)


@pytest.mark.parametrize("make, shape", [
    pytest.param(_spikeops_spikformer, (2, 3, 32, 32), id="spikeops-spikformer"),
    pytest.param(_spikeops_qkformer, (2, 3, 16, 16), id="spikeops-qkformer"),
    pytest.param(_spikingjelly_spikformer, (2, 3, 32, 32), id="spikingjelly-spikformer"),
])
def test_backbone_flops_match_flop_counter(make, shape):
    model = make().eval()
    energy.zoo.calibrate_batch_norm(model, torch.rand(shape))
    x = torch.rand(shape)
    report = profile(model, x)
    assert report.time_steps == 2 and report.batch_size == shape[0]
    assert dense_macs_per_sample(report) == pytest.approx(flop_counter_macs(model, x, shape[0]), rel=1e-12)
    kinds = {layer.kind for layer in report.layers}
    assert {"conv2d", "linear"} <= kinds
    assert report.layers[0].op_type == "MAC"  # the encoding conv sees the real-valued image
    assert sum(layer.op_type == "MAC" for layer in report.layers) <= 2  # encoding layer and the time-averaged head
    assert 0.0 < report.firing_rate < 1.0
    assert report.sops > 0


# --- hand-computed energy of a 2-layer network --------------------------------------------------------------

class TwoLayer(nn.Module):
    """Linear(4->3) encoding, LIF, Linear(3->2). W1 routes input i to neuron i, so the LIF inputs are
    3, 1, 2 at every step: with tau = 2 and threshold 1, neurons 0 and 2 fire at both steps (3/2 >= 1 and
    2/2 >= 1, hard reset to 0), neuron 1 never does (1/2, then 3/4)."""

    def __init__(self):
        super().__init__()
        self.fc1 = TimeFlat(nn.Linear(4, 3))
        self.lif = spikeops.LIF(step_mode="m", backend="torch")
        self.fc2 = TimeFlat(nn.Linear(3, 2))
        with torch.no_grad():
            self.fc1.layer.weight.copy_(torch.eye(3, 4))
            self.fc1.layer.bias.zero_()

    def forward(self, x):
        return self.fc2(self.lif(self.fc1(x)))


def test_two_layer_network_energy_by_hand():
    T, B = 2, 1
    x = torch.tensor([3.0, 1.0, 2.0, 0.25]).expand(T, B, 4)  # the same (direct-encoded) input at every step
    report = profile(TwoLayer(), x)
    assert (report.time_steps, report.batch_size) == (T, B)
    fc1, fc2 = report.layers
    # fc1: 4*3 MACs per step on a real-valued input repeated over time -> computed once.
    assert (fc1.op_type, fc1.flops, fc1.mac_ops, fc1.sops, fc1.params, fc1.weight_passes) == ("MAC", 12, 12, 0, 15, 1)
    # fc2: 4 spikes (2 neurons x 2 steps), each fans out to 2 outputs -> 8 synaptic ops.
    assert (fc2.op_type, fc2.flops, fc2.sops, fc2.params, fc2.weight_passes) == ("AC", 6, 8, 8, 2)
    assert fc2.firing_rate == pytest.approx(4 / 6)
    (lif,) = report.neurons
    assert (lif.neurons, lif.time_steps, lif.spikes) == (3, 2, 4)

    e_ac, e_mac, e_mem = 0.9, 4.6, 3.12
    estimates = {(e.model, e.network): e for e in report.energy()}
    assert estimates["conventional", "SNN"].total_pj == pytest.approx(e_ac * 8 + e_mac * 12)
    assert estimates["conventional", "ANN"].total_pj == pytest.approx(e_mac * (12 + 6))
    snn = estimates["unified", "SNN"]
    assert snn.compute_pj == pytest.approx(e_ac * 8 + e_mac * 12)
    # weights: fc1 read once (15), fc2 read at both steps (2 * 8); membrane: 3 neurons x 2 steps x (read + write).
    assert snn.memory_pj == pytest.approx(e_mem * (15 + 2 * 8 + 3 * 2 * 2))
    ann = estimates["unified", "ANN"]
    assert ann.total_pj == pytest.approx(e_mac * 18 + e_mem * (15 + 8))
    qann = estimates["unified", "QANN-8b"]
    assert qann.compute_pj == pytest.approx(e_ac * 0.5 * 8 * 18)
    assert qann.memory_pj == pytest.approx(e_mem * (15 + 8) * 8 / 32)

    custom = UnifiedEnergy(e_ac_pj=0.03, e_mac_pj=0.2, e_mem_pj=1.0, snn_weight_bits=8, membrane_bits=16,
                           qann_bits=4, qann_bit_sparsity=0.25)
    snn, ann, qann = custom.estimate(report)
    assert snn.total_pj == pytest.approx(0.03 * 8 + 0.2 * 12 + (15 + 16) * 8 / 32 + 12 * 16 / 32)
    assert qann.network == "QANN-4b" and qann.compute_pj == pytest.approx(0.03 * 0.75 * 4 * 18)
    conventional_snn, _ = ConventionalEnergy(e_ac_pj=1.0, e_mac_pj=10.0).estimate(report)
    assert conventional_snn.total_pj == pytest.approx(8 + 120)


def test_time_varying_real_input_costs_a_mac_per_step():
    x = torch.tensor([[[3.0, 1.0, 2.0, 0.25]], [[3.0, 1.0, 2.0, 0.5]]])  # differs between the 2 steps
    fc1 = profile(TwoLayer(), x).layers[0]
    assert (fc1.op_type, fc1.mac_ops, fc1.weight_passes) == ("MAC", 24, 2)


# --- firing rates against spikes counted directly ------------------------------------------------------------

class MixedNet(nn.Module):
    """Encoding conv, spikeops LIF, conv, SpikingJelly LIF, linear head per step."""

    def __init__(self):
        super().__init__()
        self.conv1 = TimeFlat(nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.BatchNorm2d(8)))
        self.lif1 = spikeops.LIF(step_mode="m", backend="torch")
        self.conv2 = TimeFlat(nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.BatchNorm2d(8)))
        self.lif2 = sj_neuron.LIFNode(step_mode="m", v_threshold=0.5)
        self.fc = TimeFlat(nn.Linear(8 * 6 * 6, 5))

    def forward(self, x):
        s1 = self.lif1(self.conv1(x))
        s2 = self.lif2(self.conv2(s1))
        return self.fc(s2.flatten(2))


def test_firing_rates_match_counted_spikes():
    T, B = 3, 2
    model = MixedNet()
    x = torch.randn(T, B, 2, 6, 6) * 2
    energy.zoo.calibrate_batch_norm(model, x)  # unit-variance pre-activations, so that both layers fire
    spikes = {}
    handles = [getattr(model, name).register_forward_hook(
        lambda m, i, out, name=name: spikes.__setitem__(name, out.clone())) for name in ("lif1", "lif2")]
    report = profile(model, x)
    for h in handles:
        h.remove()
    assert (report.time_steps, report.batch_size) == (T, B)
    neurons = {n.name: n for n in report.neurons}
    for name in ("lif1", "lif2"):
        counted_directly = spikes[name]
        assert 0 < counted_directly.sum() < counted_directly.numel()
        assert neurons[name].firing_rate == pytest.approx(float(counted_directly.mean()))
        assert neurons[name].spikes == pytest.approx(float(counted_directly.sum()) / B)
        assert neurons[name].neurons == counted_directly[0, 0].numel()
    layers = {layer.name: layer for layer in report.layers}
    assert layers["conv1.layer.0"].op_type == "MAC"
    conv2, fc = layers["conv2.layer.0"], layers["fc.layer"]
    assert conv2.firing_rate == pytest.approx(float(spikes["lif1"].mean()))
    assert fc.firing_rate == pytest.approx(float(spikes["lif2"].mean()))
    # SOPs = rate * T * FLOPs, and FLOPs of the grouped conv = outputs * (C_in / groups) * k * k.
    assert conv2.flops == 8 * 6 * 6 * 4 * 9
    assert conv2.sops == pytest.approx(conv2.firing_rate * T * conv2.flops)
    all_spikes = sum(float(s.sum()) for s in spikes.values())
    all_slots = sum(s.numel() for s in spikes.values())
    assert report.firing_rate == pytest.approx(all_spikes / all_slots)


def test_single_step_neurons_infer_time_steps_from_calls():
    class Looped(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.lif, self.fc2 = nn.Linear(4, 6), sj_neuron.IFNode(step_mode="s"), nn.Linear(6, 3)

        def forward(self, x_seq):
            return torch.stack([self.fc2(self.lif(self.fc1(x))) for x in x_seq])

    report = profile(Looped(), torch.randn(5, 2, 4) * 3)
    assert (report.time_steps, report.batch_size) == (5, 2)
    fc1, fc2 = report.layers
    assert (fc1.time_steps, fc1.flops, fc1.mac_ops) == (5, 24, 120)
    assert (fc2.time_steps, fc2.flops) == (5, 18)
    assert fc2.sops == pytest.approx(fc2.firing_rate * 5 * 18)
    (lif,) = report.neurons
    assert (lif.neurons, lif.time_steps) == (6, 5)


def test_network_without_neurons_is_an_ann():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 2))
    report = profile(model, torch.randn(3, 3, 6, 6))
    assert (report.time_steps, report.batch_size) == (1, 3)
    assert all(layer.op_type == "MAC" for layer in report.layers)
    snn, ann = ConventionalEnergy().estimate(report)
    assert snn.total_pj == pytest.approx(ann.total_pj)


# --- multi-bit and bipolar spikes (Decision 9) -----------------------------------------------------------------

def test_multi_bit_spikes_count_their_integer_value():
    layer = nn.Linear(4, 3)
    x = torch.tensor([[0.0, 2.0, 1.0, 0.0], [4.0, 0.0, 0.0, 1.0]])  # 4 non-zero entries carrying 8 spikes
    (record,) = profile(layer, x).layers
    assert record.op_type == "AC"
    assert record.firing_rate == pytest.approx(8 / 8)  # the integer count, not the 4/8 non-zero fraction
    assert record.sops == pytest.approx(8 * 3 / 2)      # every spike unit fans out to 3 outputs; per sample

    bipolar = torch.tensor([[0.0, -1.0, 1.0, 0.0], [-1.0, 0.0, 0.0, 0.0]])
    (record,) = profile(layer, bipolar).layers
    assert (record.op_type, record.firing_rate) == ("AC", pytest.approx(3 / 8))

    (record,) = profile(layer, x, max_spike_level=3).layers  # a 4 exceeds the bound: not spikes
    assert (record.op_type, record.firing_rate, record.sops) == ("MAC", None, 0.0)
    (record,) = profile(layer, x + 0.5).layers
    assert record.op_type == "MAC"


def test_sew_residual_sums_feed_integer_spikes():
    class SEW(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = spikeops.IF(step_mode="m", backend="torch"), spikeops.IF(step_mode="m", backend="torch")
            self.fc = TimeFlat(nn.Linear(6, 2))

        def forward(self, x):
            return self.fc(self.a(x) + self.b(x * 2))

    x = torch.rand(2, 1, 6) * 2
    model = SEW()
    summed = model.a(x) + model.b(x * 2)
    model.a.reset()
    model.b.reset()
    assert summed.max() == 2
    (fc,) = profile(model, x).layers
    assert fc.op_type == "AC"
    assert fc.sops == pytest.approx(float(summed.sum()) * 2)


# --- attention hooks ----------------------------------------------------------------------------------------

class ToySSA(nn.Module):
    """SSA on spikes, Y = SN_0.5((Q K^T) V * 0.125), Q/K/V from linear projections of spike input."""

    def __init__(self, dim=8, heads=2):
        super().__init__()
        self.heads = heads
        self.qkv = TimeFlat(nn.Linear(dim, 3 * dim, bias=False))
        self.qkv_lif = spikeops.LIF(step_mode="m", backend="torch", v_threshold=0.3)
        self.attn_lif = spikeops.LIF(step_mode="m", backend="torch", v_threshold=0.5)

    def split(self, x):
        T, B, N, C = x.shape
        q, k, v = x.reshape(T, B, N, 3, self.heads, C // 3 // self.heads).permute(3, 0, 1, 4, 2, 5)
        return q, k, v

    def forward(self, x):
        q, k, v = self.split(self.qkv_lif(self.qkv(x)))
        return self.attn_lif(self.core(q, k, v) * 0.125)

    def core(self, q, k, v):
        return (q @ k.transpose(-2, -1)) @ v


class FusedToySSA(ToySSA):
    """The same attention computed by a kernel the profiler cannot see (einsum stands in for it); the
    module reports its matmuls itself, keeping the operands of the last call."""

    def core(self, q, k, v):
        self._operands = (q, k, v)
        return torch.einsum("tbhnm,tbhmd->tbhnd", torch.einsum("tbhnd,tbhmd->tbhnm", q, k), v)

    def energy_ops(self, inputs, output):
        q, k, v = self._operands
        kt = k.transpose(-2, -1)
        return [count_matmul(q, kt, label="qk"), count_matmul(q @ kt, v, label="qk_v")]


def _attention_input():
    return (torch.rand(2, 3, 5, 8) < 0.4).float()


def test_energy_ops_hook_reports_what_the_automatic_count_would():
    x = _attention_input()
    torch.manual_seed(1)
    plain = ToySSA()
    torch.manual_seed(1)
    fused = FusedToySSA()
    auto, hooked = profile(plain, x), profile(fused, x)
    auto_mm = [layer for layer in auto.layers if layer.kind == "matmul"]
    hooked_mm = [layer for layer in hooked.layers if layer.kind == "matmul"]
    assert [layer.name for layer in hooked_mm] == ["(model):qk", "(model):qk_v"]
    assert len(auto_mm) == 2 and len(hooked.layers) == 3  # qkv projection + the two reported matmuls
    for a, h in zip(auto_mm, hooked_mm):
        assert (h.flops, h.time_steps, h.op_type) == (a.flops, a.time_steps, "AC")
        assert h.sops == pytest.approx(a.sops)
    T, B, heads, N, d = 2, 3, 2, 5, 4
    assert auto_mm[0].flops == heads * N * N * d and auto_mm[1].flops == heads * N * N * d
    assert auto.sops == pytest.approx(hooked.sops)


def test_spike_matmul_is_driven_by_its_sparser_spike_operand():
    a = torch.tensor([[1.0, 0.0], [0.0, 0.0]])      # 1 spike in 4
    b = torch.tensor([[1.0, 1.0], [1.0, 0.0]])      # 3 spikes in 4
    count = count_matmul(a, b)
    assert (count.spikes, count.slots, count.macs) == (1.0, 4, 8)
    real = torch.tensor([[0.5, 2.0], [1.0, 3.0]])
    count = count_matmul(real, b)
    assert count.spike_driven and count.spikes == 3.0
    count = count_matmul(nn.Parameter(b.clone()), a)  # a weight operand never drives
    assert (count.kind, count.spikes, count.weight_params) == ("linear", 1.0, 4)
    assert not count_matmul(real, real * 1.5).spike_driven


def test_spikeops_attention_ops_report_their_work_on_every_backend():
    """The attention ops are decorated with @counted: a profile sees the same work whether it runs in the
    pure-PyTorch reference (where the automatic count could see the matmuls) or in a fused kernel."""
    from spikeops.ops import attention

    plain_ssa = attention.spiking_self_attention.__wrapped__  # the undecorated functions
    plain_token = attention.qk_token_attention.__wrapped__

    class Core(nn.Module):
        def __init__(self, ssa, token, backend):
            super().__init__()
            self.ssa, self.token, self.backend = ssa, token, backend

        def forward(self, q, k, v):
            return (self.ssa(q, k, v, 2, order="qk_v", backend=self.backend),
                    self.token(q, k, 2, backend=self.backend))

    T, B, C, N = 2, 3, 8, 6
    q, k, v = ((torch.rand(T, B, C, N) < p).float() for p in (0.3, 0.5, 0.2))
    # No neuron modules here (the attention neurons live inside the ops), so T and B are given.
    auto = profile(Core(plain_ssa, plain_token, "torch"), (q, k, v), time_steps=T, batch_size=B)
    hooked = profile(Core(attention.spiking_self_attention, attention.qk_token_attention, "torch"), (q, k, v),
                     time_steps=T, batch_size=B)
    assert [layer.name for layer in hooked.layers] == ["(model):qk", "(model):qk_v", "(model):q_sum"]
    auto_mm = [layer for layer in auto.layers if layer.kind == "matmul"]
    assert [(a.flops, a.time_steps) for a in auto_mm] == [(h.flops, h.time_steps) for h in hooked.layers[:2]]
    assert sum(a.sops for a in auto_mm) == pytest.approx(sum(h.sops for h in hooked.layers[:2]))
    q_sum = hooked.layers[2]
    assert (q_sum.kind, q_sum.flops) == ("reduce", C * N)
    assert q_sum.sops == pytest.approx(float(q.sum()) / B)
    fused = profile(Core(attention.spiking_self_attention, attention.qk_token_attention, "cpu"), (q, k, v),
                    time_steps=T, batch_size=B)
    assert [(f.name, f.flops, f.sops) for f in fused.layers] == [(h.name, h.flops, h.sops) for h in hooked.layers]
    # Outside a profile the wrapper is transparent.
    assert torch.equal(attention.spiking_self_attention(q, k, v, 2, backend="torch"), plain_ssa(q, k, v, 2, backend="torch"))


def test_registered_counters_for_custom_ops_and_foreign_modules():
    @torch.library.custom_op("spikeops_energy_test::spike_mm", mutates_args=())
    def spike_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a @ b

    energy.register_op_counter("spikeops_energy_test::spike_mm",
                               lambda args, kwargs, out: [count_matmul(args[0], args[1], out, label="custom")])

    class Foreign(nn.Module):
        def forward(self, a, b):
            return torch.einsum("ij,jk->ik", a, b)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.foreign = Foreign()

        def forward(self, a, b):
            return spike_mm(a, b) + self.foreign(a, b)

    energy.register_module_counter(Foreign, lambda m, inputs, out: [count_matmul(*inputs, out)])
    a, b = (torch.rand(4, 3) < 0.5).float(), torch.randn(3, 5)
    report = profile(Net(), (a, b), batch_size=1)
    assert [(layer.name, layer.flops) for layer in report.layers] == [("(model)", 60), ("foreign", 60)]
    assert all(layer.sops == pytest.approx(float(a.sum()) * 5) for layer in report.layers)


# --- exports and the command line --------------------------------------------------------------------------

def test_table_csv_and_dict_exports(tmp_path):
    report = profile(TwoLayer(), torch.tensor([3.0, 1.0, 2.0, 0.25]).expand(2, 1, 4))
    rows = list(csv.DictReader(io.StringIO(report.to_csv(tmp_path / "layers.csv"))))
    assert [r["name"] for r in rows] == ["fc1.layer", "fc2.layer"]
    assert [r["op_type"] for r in rows] == ["MAC", "AC"] and float(rows[1]["sops"]) == 8
    assert (tmp_path / "layers.csv").read_text() == report.to_csv()
    d = json.loads(json.dumps(report.to_dict()))
    assert d["totals"]["sops"] == 8 and d["totals"]["flops"] == 18 and len(d["energy"]) == 5
    table = report.table()
    assert "fc2.layer" in table and "conventional SNN" in table and "unified QANN-8b" in table


def test_command_line_profiles_a_zoo_model(tmp_path, capsys):
    assert cli_main(["--list"]) == 0
    listed = capsys.readouterr().out.split()
    assert "spikingjelly:sew_resnet18" in listed and "spikformer_8_384" in listed
    csv_path, json_path = tmp_path / "sew.csv", tmp_path / "sew.json"
    assert cli_main(["spikingjelly:sew_resnet18", "-T", "2", "--image-size", "32", "--csv", str(csv_path),
                     "--json", str(json_path)]) == 0
    assert torch.is_grad_enabled(), "the command must not leave autograd disabled for its caller"
    out = capsys.readouterr().out
    assert "conventional SNN" in out and "conv1" in out
    profile_dict = json.loads(json_path.read_text())
    assert profile_dict["time_steps"] == 2
    assert profile_dict["layers"][0]["op_type"] == "MAC" and profile_dict["totals"]["sops"] > 0
    assert len(list(csv.DictReader(csv_path.open()))) == len(profile_dict["layers"])


# --- bad input ----------------------------------------------------------------------------------------------

def test_bad_arguments_raise_clear_errors():
    with pytest.raises(TypeError, match="model"):
        profile(lambda x: x, torch.zeros(1))
    with pytest.raises(ValueError, match="max_spike_level"):
        profile(nn.Linear(2, 2), torch.zeros(1, 2), max_spike_level=0)
    with pytest.raises(ValueError, match="time_steps"):
        profile(nn.Linear(2, 2), torch.zeros(1, 2), time_steps=0)
    with pytest.raises(ValueError, match="qann_bit_sparsity"):
        UnifiedEnergy(qann_bit_sparsity=1.5)
    with pytest.raises(ValueError, match="e_ac_pj"):
        ConventionalEnergy(e_ac_pj=-1.0)
    with pytest.raises(ValueError, match="qann_bits"):
        UnifiedEnergy(qann_bits=0)
    with pytest.raises(ValueError, match="name"):
        energy.zoo.build("no_such_model")
    with pytest.raises(ValueError, match="op"):
        energy.register_op_counter("no_namespace", lambda *a: [])

    class BadHook(nn.Linear):
        def energy_ops(self, inputs, output):
            return [42]

    with pytest.raises(TypeError, match="energy_ops of"):
        profile(BadHook(2, 2), torch.zeros(1, 2))
