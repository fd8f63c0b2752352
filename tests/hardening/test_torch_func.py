"""Issue 18, "Also": torch.func (grad, jacrev, vmap) through the attention operators on every fused backend
gives the reference's values. Their autograd Functions define setup_context; vmap runs the fused op once per
batch entry (a loop rule), and a backward that torch.func runs differentiates the reference."""
import pytest
import torch
from torch.func import grad, jacrev, vmap

import spikeops
from spikeops.ops.attention import (qk_channel_attention, qk_token_attention, spike_driven_attention,
                                    spiking_self_attention)
from spikeops.ops.bipolar_attention.op import bipolar_attention
from spikeops.ops.experts_mixture.op import experts_mixture

BACKENDS = [b for b in ("cpu", "triton") if b != "cpu" or spikeops.backends.extension_available()]


def _spikes(shape, seed, rate=0.5):
    return (torch.rand(shape, generator=torch.Generator().manual_seed(seed)) < rate).float()


def _real(shape, seed):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


SHAPE = (2, 2, 4, 3)
OPS = {
    "qk_token": (lambda b: lambda q, k: qk_token_attention(q, k, 2, backend=b), (_spikes(SHAPE, 0), _real(SHAPE, 1))),
    "qk_channel": (lambda b: lambda q, k: qk_channel_attention(q, k, 2, backend=b), (_spikes(SHAPE, 0), _real(SHAPE, 1))),
    "sdsa": (lambda b: lambda q, k, v: spike_driven_attention(q, k, v, 2, backend=b),
             (_spikes(SHAPE, 0), _real(SHAPE, 1), _real(SHAPE, 2))),
    "ssa": (lambda b: lambda q, k, v: spiking_self_attention(q, k, v, 2, backend=b),
            (_spikes(SHAPE, 0), _real(SHAPE, 1), _real(SHAPE, 2))),
    "bipolar": (lambda b: lambda q, k, v: bipolar_attention(q, k, v, 1.0, backend=b),
                (_spikes(SHAPE, 3) - _spikes(SHAPE, 4), _spikes(SHAPE, 5), _real(SHAPE, 6))),
    "experts_mixture": (lambda b: lambda r, a: experts_mixture(r, a, backend=b), (_spikes((3, 4), 7), _real((3, 4, 5), 8))),
}
TRANSFORMS = {
    "grad": lambda f: grad(lambda *a: (f(*a) * torch.linspace(-1, 1, f(*a).numel()).view(f(*a).shape)).sum(),
                           argnums=(0, 1)),
    "jacrev": lambda f: jacrev(f, argnums=1),
    "vmap": lambda f: vmap(f),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("name", OPS)
def test_torch_func_matches_the_reference(name, transform, backend):
    make, inputs = OPS[name]
    if transform == "vmap":  # a batch of two calls: the inputs and their mirror image along T
        inputs = tuple(torch.stack([x, x.flip(0)]) for x in inputs)
    want = TRANSFORMS[transform](make("torch"))(*inputs)
    got = TRANSFORMS[transform](make(backend))(*inputs)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
