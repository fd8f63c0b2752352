"""Minimum-memory training (spikeops.minimum_memory): blocks recompute in backward, and training is otherwise
unchanged — the same outputs, gradients, BatchNorm running statistics and neuron state, bit for bit, as the
same model trained without the mode; what crosses a block boundary is kept at its smallest exact size."""
import copy
import io
import pickle

import pytest
import torch
from torch import nn

import spikeops
from spikeops.models import qkformer, qkformer_bipolar, qsd, sdt_v2, semm, spikformer
from spikeops.nn import LIF, checkpointed_blocks, enable_spike_packing, held_for_backward
from spikeops.nn.checkpointing import full_memory, minimum_memory


def _qkformer(backend):
    return qkformer.QKFormer(T=2, num_classes=4, embed_dim=32, num_heads=2, depths=(1, 1, 1), imagenet=True,
                             backend=backend)


BACKBONES = {
    "qkformer": (_qkformer, (2, 3, 32, 32)),
    "qkformer_bipolar": (lambda b: qkformer_bipolar.qkformer_bipolar(T=2, num_classes=4, embed_dim=32, num_heads=2,
                                                                      depths=(1, 1, 1), imagenet=False, backend=b),
                         (2, 3, 8, 8)),
    "spikformer": (lambda b: spikformer.Spikformer(T=2, num_classes=4, embed_dim=32, num_heads=2, depth=2, backend=b),
                   (2, 3, 32, 32)),
    "semm": (lambda b: semm.semm_spikformer(embed_dim=32, depth=1, imagenet=False, num_classes=4, T=2, num_experts=2,
                                            expert_dim=8, backend=b), (2, 3, 8, 8)),
    "sdt_v2": (lambda b: sdt_v2.MetaSpikeFormer(T=2, num_classes=4, embed_dims=(8, 16, 16, 32), depths=(1, 1),
                                                num_heads=2, backend=b), (2, 3, 32, 32)),
    "qsd": (lambda b: qsd.qsd_transformer(T=2, num_classes=4, embed_dims=(8, 16, 16, 32), depths=(1, 1), num_heads=2,
                                          backend=b), (2, 3, 32, 32)),
}


def _train_step(model, x, steps=1):
    """``steps`` forward/backward passes, neuron states carried over detached (truncated BPTT); returns
    (outputs, gradients, buffers) as fresh tensors."""
    outputs = []
    for _ in range(steps):
        out = model(x)
        out = out[0] if isinstance(out, tuple) else out
        (out.square().mean() + out.mean()).backward()
        outputs.append(out.detach().clone())
        for module in model.modules():
            if callable(getattr(module, "detach", None)):
                module.detach()
    grads = [p.grad.clone() if p.grad is not None else None for p in model.parameters()]
    return outputs, grads, [b.clone() for b in model.buffers()]


def _assert_identical(a, b):
    for left, right in zip(a, b, strict=True):
        for u, v in zip(left, right, strict=True):
            if u is None or v is None:
                assert u is None and v is None
            else:
                assert torch.equal(u, v)


@pytest.mark.parametrize("backend", ["torch", "cpu"])
@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_backbone_trains_identically_with_less_held(name, backend):
    build, shape = BACKBONES[name]
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(1)) * 2
    torch.manual_seed(0)
    plain = build(backend).train()
    lean = copy.deepcopy(plain)
    minimum_memory(lean)
    assert checkpointed_blocks(lean)
    torch.manual_seed(5)
    expected = _train_step(plain, x, steps=2)
    torch.manual_seed(5)
    got = _train_step(lean, x, steps=2)
    _assert_identical(expected, got)  # outputs, gradients, running statistics (num_batches_tracked == 2)
    assert all(int(b) == 2 for n, b in plain.named_buffers() if n.endswith("num_batches_tracked"))
    held = [held_for_backward(m, x, inputs=[x, *m.parameters(), *m.buffers()])["held_bytes"] for m in (plain, lean)]
    assert held[1] < held[0]


def test_triton_backbone_trains_identically():
    build, shape = BACKBONES["qkformer_bipolar"]
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(1)) * 2
    torch.manual_seed(0)
    plain = build("triton").train()
    lean = minimum_memory(copy.deepcopy(plain))
    _assert_identical(_train_step(plain, x), _train_step(lean, x))


class _StatefulBlock(nn.Module):
    def __init__(self, channels, neuron):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.drop = nn.Dropout(0.3)
        self.neuron = neuron

    def forward(self, x):
        T, B = x.shape[:2]
        y = self.drop(self.bn(self.conv(x.flatten(0, 1))))
        return self.neuron(y.view(T, B, *y.shape[1:]))


def _stateful_model(neuron_factory, channels=4, depth=3):
    torch.manual_seed(0)
    model = nn.Sequential(*[_StatefulBlock(channels, neuron_factory()) for _ in range(depth)])
    return enable_spike_packing(model).train()


def _spikingjelly_lif(step_mode="m"):
    from spikingjelly.activation_based import neuron

    return neuron.LIFNode(step_mode=step_mode, detach_reset=True)


@pytest.mark.parametrize("neuron_factory", [lambda: LIF(step_mode="m", backend="cpu"), _spikingjelly_lif],
                         ids=["spikeops", "spikingjelly"])
def test_stateful_neurons_dropout_and_running_stats(neuron_factory):
    """Membranes carried from one step to the next (no reset), dropout masks and running statistics: the
    recompute starts from the state the forward saw and leaves the state the forward left."""
    x = (torch.rand(3, 2, 4, 6, 6, generator=torch.Generator().manual_seed(2)) > 0.5).float()
    plain = _stateful_model(neuron_factory)
    lean = minimum_memory(copy.deepcopy(plain), _StatefulBlock)
    torch.manual_seed(3)
    expected = _train_step(plain, x, steps=3)
    torch.manual_seed(3)
    got = _train_step(lean, x, steps=3)
    _assert_identical(expected, got)
    for a, b in zip(plain, lean):
        assert torch.equal(a.neuron.v, b.neuron.v)


@pytest.mark.parametrize("neuron_factory", [lambda: LIF(step_mode="s", backend="cpu"), lambda: _spikingjelly_lif("s")],
                         ids=["spikeops", "spikingjelly"])
def test_single_step_calls_then_one_backward(neuron_factory):
    """T single-step forwards, then one backward through all of them: each recompute starts from the state its
    call saw and leaves the state the last call left."""
    class Step(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.neuron = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), neuron_factory()

        def forward(self, x):
            return self.neuron(self.bn(self.conv(x)))

    torch.manual_seed(0)
    plain = nn.Sequential(Step(), Step()).train()
    lean = minimum_memory(copy.deepcopy(plain), Step)
    x = torch.rand(5, 2, 4, 6, 6, generator=torch.Generator().manual_seed(4)) * 3
    results = []
    for model in (plain, lean):
        loss = sum(model(x[t]).mean() * (t + 1) for t in range(x.shape[0]))
        loss.backward()
        results.append(([p.grad.clone() for p in model.parameters()], [b.clone() for b in model.buffers()],
                         [m.neuron.v.clone() for m in model]))
    _assert_identical(results[0], results[1])


def test_spikes_cross_block_boundaries_as_bits():
    """Blocks ending in a neuron: with packing on, each block's input spikes are held as bits (1/32 of float32),
    and gradients are those of the unpacked model."""
    x = (torch.rand(4, 2, 8, 8, 8, generator=torch.Generator().manual_seed(2)) > 0.5).float()
    packed = minimum_memory(_stateful_model(lambda: LIF(step_mode="m", backend="cpu"), channels=8), _StatefulBlock)
    unpacked = spikeops.disable_spike_packing(copy.deepcopy(packed))
    fresh = copy.deepcopy(packed), copy.deepcopy(unpacked)
    held = []
    for model in (packed, unpacked):
        for m in model.modules():
            if hasattr(m, "reset"):
                m.reset()
        held.append(held_for_backward(model, x, inputs=[x, *model.parameters(), *model.buffers()])["held_bytes"])
    boundary = 2 * x.numel() * 4  # blocks 2 and 3 take the spikes of blocks 1 and 2
    assert held[1] >= boundary
    assert held[0] <= held[1] - boundary + boundary // 32 + 64 * 4
    torch.manual_seed(3)
    a = _train_step(fresh[0], x)
    torch.manual_seed(3)
    _assert_identical(a, _train_step(fresh[1], x))


def test_eval_and_no_grad_run_the_plain_forward():
    model = minimum_memory(_qkformer("cpu"))
    x = torch.rand(1, 3, 32, 32)
    model.eval()
    eval_out = model(x)
    assert eval_out.grad_fn is not None  # eval with grad: plain forward, graph kept, nothing recomputed
    with torch.no_grad():
        model.train()
        assert held_for_backward(model, x)["held_bytes"] == 0


def test_switches_and_errors():
    model = _qkformer("cpu")
    keys = list(model.state_dict())
    assert minimum_memory(model) is model
    names = checkpointed_blocks(model)
    assert names == checkpointed_blocks(minimum_memory(model))  # idempotent
    assert "patch_embed1" in names and "stage1.0" in names
    assert list(model.state_dict()) == keys
    clone = pickle.loads(pickle.dumps(model))
    assert checkpointed_blocks(clone) == names
    buffer = io.BytesIO()
    torch.save(model, buffer)
    assert checkpointed_blocks(copy.deepcopy(model)) == names
    assert full_memory(model) is model and checkpointed_blocks(model) == []
    with pytest.raises(ValueError, match="block_types"):
        minimum_memory(nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="block_types: no submodule"):
        minimum_memory(nn.Sequential(nn.Linear(2, 2)), nn.Conv2d)
    with pytest.raises(ValueError, match="block_types"):
        minimum_memory(nn.Sequential(nn.Linear(2, 2)), (int,))
    with pytest.raises(TypeError, match="model"):
        minimum_memory("model", nn.Linear)


def test_converted_spikingjelly_model():
    """A SpikingJelly model as spikeops.convert leaves it (BatchNorm fused into the neurons, spikes packed), its
    inner Sequentials as blocks."""
    from spikingjelly.activation_based import layer, neuron

    def block():
        return nn.Sequential(layer.SeqToANNContainer(nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)),
                             neuron.LIFNode(step_mode="m", detach_reset=True))

    torch.manual_seed(0)
    plain, report = spikeops.convert(nn.Sequential(block(), block(), block()), backend="cpu")
    assert report.fused
    lean = minimum_memory(copy.deepcopy(plain), nn.Sequential)
    assert checkpointed_blocks(lean) == ["0", "1", "2"]
    x = (torch.rand(4, 2, 4, 6, 6, generator=torch.Generator().manual_seed(2)) > 0.5).float()
    for model in (plain, lean):
        for m in model.modules():
            if hasattr(m, "reset"):
                m.reset()
    _assert_identical(_train_step(plain, x, steps=2), _train_step(lean, x, steps=2))


def test_residual_spike_counts_cross_block_boundaries_as_bits():
    """QKFormer's blocks take and return residual sums of spike counts: marked inside the checkpointed blocks
    too, they are saved at the boundaries as a few bits an element, not as float32."""
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    held = {}
    for packing in (True, False):
        model = minimum_memory(_qkformer("cpu").train())
        if not packing:
            spikeops.disable_spike_packing(model)
        measured = held_for_backward(model, x, inputs=[x, *model.parameters(), *model.buffers()])
        held[packing] = measured["held_bytes"], measured["packed_bytes"]
    # Every block input but the first embedding's (the image repeated over T=2) is a spike count, packed; besides
    # them only the head's input [1, 32] stays float.
    image_copy, head_input = 2 * x.numel() * 4, 32 * 4
    assert held[True][0] - held[True][1] == image_copy + head_input
    assert held[False][0] - image_copy - head_input > 8 * held[True][1]  # float32 spike counts against bits


def _held(model, x):
    from spikingjelly.activation_based import functional

    functional.reset_net(model)
    return held_for_backward(model, x, inputs=[x, *model.parameters(), *model.buffers()])["held_bytes"]


def test_budget_recomputes_the_blocks_holding_most_per_flop_until_within_it():
    """``budget_mib``: the model holds at most that after forward, by recomputing the blocks that hold the most
    bytes per FLOP recomputed (QKFormer's high-resolution blocks before its deep ones), trains exactly as
    without the mode, and the measuring forwards leave no trace (state, running statistics, RNG, modes)."""
    build, shape = BACKBONES["qkformer"]
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(1)) * 2
    torch.manual_seed(0)
    plain = build("cpu").train()
    full, everything = _held(plain, x), _held(minimum_memory(copy.deepcopy(plain)), x)
    budget = (full + everything) / 2 / 2 ** 20
    lean = copy.deepcopy(plain)
    lean.eval()
    state = copy.deepcopy(lean.state_dict())
    rng = torch.get_rng_state()
    assert minimum_memory(lean, budget_mib=budget, example=x) is lean
    assert not lean.training, "modes as they were"
    assert torch.equal(torch.get_rng_state(), rng)
    _assert_identical([list(state.values())], [list(lean.state_dict().values())])  # running stats untouched
    chosen = checkpointed_blocks(lean)
    assert 0 < len(chosen) < len(checkpointed_blocks(minimum_memory(copy.deepcopy(plain))))
    assert "patch_embed1" in chosen and "stage3.0" not in chosen, chosen
    lean.train()
    assert _held(copy.deepcopy(lean), x) <= budget * 2 ** 20
    torch.manual_seed(5)
    expected = _train_step(plain, x, steps=2)
    torch.manual_seed(5)
    _assert_identical(expected, _train_step(lean, x, steps=2))
    # A bigger budget recomputes fewer blocks; one below what recomputing everything reaches takes all, warning.
    assert set(checkpointed_blocks(minimum_memory(lean, budget_mib=full / 2 ** 20, example=x))) == set()
    with pytest.warns(UserWarning, match="budget_mib=0"):
        minimum_memory(lean, budget_mib=0, example=x)
    assert checkpointed_blocks(lean) == checkpointed_blocks(minimum_memory(copy.deepcopy(plain)))


def test_budget_arguments_are_checked():
    model = _qkformer("cpu")
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(ValueError, match="example: expected the model's input"):
        minimum_memory(model, budget_mib=4)
    with pytest.raises(ValueError, match="example: only used with budget_mib"):
        minimum_memory(model, example=x)
    for bad in (-1, "4", True, float("nan")):
        with pytest.raises(ValueError, match="budget_mib: expected a number of MiB >= 0"):
            minimum_memory(model, budget_mib=bad, example=x)
    assert checkpointed_blocks(model) == []
