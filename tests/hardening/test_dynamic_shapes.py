"""Issue 18, item 2: the spike-gate attention operators (Q-K token / channel attention, SDSA) and the blocks built
on them compile with dynamic batch and spatial sizes (torch.compile(fullgraph=True) with mark_dynamic: one graph
for every size, no recompilation) and export with a dynamic batch (torch.export). Their geometry argument is a
``SymInt[]`` computed from the tensors' sizes, checked against the tensors inside the op."""
import pytest
import torch
import torch._dynamo.testing

import spikeops
from spikeops.ops.attention import qk_channel_attention, qk_token_attention, spike_driven_attention

BACKENDS = [b for b in ("cpu", "triton") if b != "cpu" or spikeops.backends.extension_available()]
OPS = {
    "qk_token": lambda b: lambda q, k, v: qk_token_attention(q, k, 2, backend=b),
    "qk_channel": lambda b: lambda q, k, v: qk_channel_attention(q, k, 2, backend=b),
    "sdsa": lambda b: lambda q, k, v: spike_driven_attention(q, k, v, 2, backend=b),
    "sdsa_paper_split": lambda b: lambda q, k, v: spike_driven_attention(q.unflatten(2, (2, 2)).transpose(-1, -2),
                                                                         k.unflatten(2, (2, 2)).transpose(-1, -2),
                                                                         v.unflatten(2, (2, 2)).transpose(-1, -2),
                                                                         form="paper", backend=b),
}
SIZES = [(2, 6), (3, 6), (5, 9), (4, 7)]  # (batch, tokens)


def _inputs(B, N, seed):
    g = torch.Generator().manual_seed(seed)
    return [((torch.rand(2, B, 4, N, generator=g) < 0.6).float() + 0.1 * i).requires_grad_(True) for i in range(3)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", OPS)
def test_op_compiles_once_for_every_batch_and_token_count(name, backend):
    fn = OPS[name](backend)
    counter = torch._dynamo.testing.CompileCounter()
    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, backend=counter)
    for i, (B, N) in enumerate(SIZES):
        inputs = _inputs(B, N, i)
        for x in inputs:
            torch._dynamo.mark_dynamic(x, 1)
            torch._dynamo.mark_dynamic(x, 3)
        twins = [x.detach().clone().requires_grad_(True) for x in inputs]
        out, want = compiled(*inputs), fn(*twins)
        torch.testing.assert_close(out, want)
        out.sum().backward()
        want.sum().backward()
        for a, b in zip(inputs, twins):
            torch.testing.assert_close(a.grad, b.grad)
    assert counter.frame_count == 1, f"recompiled: {counter.frame_count} graphs for {len(SIZES)} sizes"


@pytest.mark.parametrize("name", OPS)
def test_op_compiles_with_aot_autograd_and_dynamic_sizes(name):
    """AOTAutograd traces forward and backward through the fake kernels with symbolic sizes."""
    backend = BACKENDS[0]
    fn = OPS[name](backend)
    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    with torch._dynamo.config.patch(error_on_recompile=True):
        for i, (B, N) in enumerate(SIZES):
            inputs = _inputs(B, N, i)
            for x in inputs:
                torch._dynamo.mark_dynamic(x, 1)
                torch._dynamo.mark_dynamic(x, 3)
            out = compiled(*inputs)
            torch.testing.assert_close(out, fn(*inputs))
            out.sum().backward()


BLOCKS = {
    "TokenQKAttention": lambda b: spikeops.TokenQKAttention(8, num_heads=2, backend=b, stateless=True),
    "ChannelQKAttention": lambda b: spikeops.ChannelQKAttention(8, num_heads=2, backend=b, stateless=True),
    "SpikeDrivenSelfAttention": lambda b: spikeops.SpikeDrivenSelfAttention(8, num_heads=2, backend=b, stateless=True),
}


def _block_input(B, H, seed):
    return torch.randn(2, B, 8, H, H, generator=torch.Generator().manual_seed(seed)) + 0.5


@pytest.mark.parametrize("name", BLOCKS)
def test_block_compiles_once_for_every_batch_and_spatial_size(name):
    backend = BACKENDS[0]
    torch.manual_seed(0)
    block = BLOCKS[name](backend).eval()
    counter = torch._dynamo.testing.CompileCounter()
    torch._dynamo.reset()
    compiled = torch.compile(block, fullgraph=True, backend=counter)
    for i, (B, H) in enumerate([(2, 3), (3, 3), (1 + 4, 4)]):
        x = _block_input(B, H, i)
        torch._dynamo.mark_dynamic(x, 1)
        torch._dynamo.mark_dynamic(x, 3)
        torch._dynamo.mark_dynamic(x, 4)
        torch.testing.assert_close(compiled(x), block(x))
    assert counter.frame_count == 1


@pytest.mark.parametrize("name", BLOCKS)
def test_block_exports_with_a_dynamic_batch(name):
    backend = BACKENDS[0]
    torch.manual_seed(0)
    block = BLOCKS[name](backend).eval()
    batch = torch.export.Dim("batch", min=2, max=64)
    exported = torch.export.export(block, (_block_input(2, 3, 0),), dynamic_shapes=({1: batch},))
    for B in (2, 3, 7):
        x = _block_input(B, 3, B)
        torch.testing.assert_close(exported.module()(x), block(x))


@pytest.mark.parametrize("name", ["qk_token", "sdsa"])
def test_op_exports_with_dynamic_batch_and_tokens(name):
    backend = BACKENDS[0]
    fn = OPS[name](backend)

    class Wrapper(torch.nn.Module):
        def forward(self, q, k, v):
            return fn(q, k, v)

    batch, tokens = torch.export.Dim("batch", min=2, max=64), torch.export.Dim("tokens", min=2, max=4096)
    inputs = [x.detach() for x in _inputs(2, 6, 0)]
    exported = torch.export.export(Wrapper(), tuple(inputs), dynamic_shapes=[{1: batch, 3: tokens}] * 3)
    for i, (B, N) in enumerate(SIZES):
        inputs = [x.detach() for x in _inputs(B, N, i)]
        torch.testing.assert_close(exported.module()(*inputs), fn(*inputs))


def test_op_and_neuron_compile_with_dynamic_true():
    """torch.compile(dynamic=True): the neuron configuration's checks take symbolic sizes (no math.isfinite)."""
    import spikeops
    from spikeops.ops.attention.functional import qk_token_attention

    fn = torch.compile(lambda q, k: qk_token_attention(q, k, 2, backend="cpu"), fullgraph=True, dynamic=True,
                       backend="aot_eager")
    for B in (2, 3, 5):
        q, k = ((torch.rand(2, B, 8, 6) > 0.5).float() for _ in range(2))
        assert torch.equal(fn(q, k), qk_token_attention(q, k, 2, backend="torch"))
    neuron = spikeops.LIF(step_mode="m", backend="cpu")
    compiled = torch.compile(neuron, fullgraph=True, dynamic=True, backend="aot_eager")
    for B in (2, 3):
        x = torch.rand(3, B, 4) * 2
        neuron.reset()
        expected = spikeops.functional.lif(x, backend="torch")[0]
        neuron.reset()
        assert torch.equal(compiled(x), expected)
