"""Spiking experts mixture (SEMM): every fused backend against the reference, gradcheck, the skip of
gated-off experts, the EMSA / EMSP modules, bad input."""
import pytest
import torch

from spikeops.attention_experts import EMSA, EMSP
from spikeops.ops.experts_mixture import naive
from spikeops.ops.experts_mixture.op import experts_mixture

from conftest import BACKEND_DEVICE, FUSED_BACKENDS


def make_inputs(shape=(3, 2, 37, 4), channels=150, dtype=torch.float32, seed=0):
    """Router spikes [..., m] (about 40% firing) and real expert outputs [..., m, C]."""
    g = torch.Generator().manual_seed(seed)
    router = (torch.rand(shape, generator=g) < 0.4).to(dtype)
    experts = torch.randn(*shape, channels, generator=g).to(dtype)
    return router, experts


def run(fn, router, experts, **kwargs):
    leaves = [t.detach().clone().requires_grad_(True) for t in (router, experts)]
    y = fn(*leaves, **kwargs)
    upstream = torch.randn(y.shape, generator=torch.Generator().manual_seed(9)).to(y)
    grads = torch.autograd.grad((y * upstream).sum(), leaves)
    return y.detach().float().cpu(), [g.float().cpu() for g in grads]


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_matches_reference(backend, dtype, tol):
    router, experts = make_inputs(dtype=dtype)
    want_y, want_grads = run(naive.experts_mixture, router, experts)
    device = BACKEND_DEVICE[backend]
    got_y, got_grads = run(experts_mixture, router.to(device), experts.to(device), backend=backend)
    torch.testing.assert_close(got_y, want_y, atol=tol, rtol=tol)
    for name, got, want in zip(("router", "experts"), got_grads, want_grads):
        torch.testing.assert_close(got, want, atol=tol * 10, rtol=tol, msg=lambda m: f"grad {name}: {m}")


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_backends_agree_bit_for_bit(backend):
    """Experts are summed in index order everywhere, so the fused backends give identical outputs."""
    router, experts = make_inputs()
    want = experts_mixture(router, experts, backend="cpu")
    got = experts_mixture(router.to(BACKEND_DEVICE[backend]), experts.to(BACKEND_DEVICE[backend]), backend=backend)
    assert torch.equal(got.cpu(), want)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_gated_off_experts_are_never_read(backend):
    """NaN in every expert row whose router spike is 0 would poison a product-and-sum; the fused
    kernels skip those rows, so the output stays finite and equals the sum over fired experts."""
    router, experts = make_inputs()
    poisoned = torch.where(router.unsqueeze(-1) == 0, torch.full_like(experts, float("nan")), experts)
    assert torch.isnan(naive.experts_mixture(router, poisoned)).any()
    device = BACKEND_DEVICE[backend]
    got = experts_mixture(router.to(device), poisoned.to(device), backend=backend).cpu()
    torch.testing.assert_close(got, naive.experts_mixture(router, experts))


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_gradcheck(backend):
    router, experts = make_inputs((2, 5, 3), channels=7, dtype=torch.float64)
    router = router + 0.5 * torch.rand(router.shape, dtype=torch.float64)  # gradients hold for any gate value
    assert torch.autograd.gradcheck(lambda r, a: experts_mixture(r, a, backend=backend),
                                    [router.requires_grad_(), experts.requires_grad_()])


def test_rejects_bad_input():
    router, experts = make_inputs()
    with pytest.raises(ValueError, match=r"expert_outputs: expected shape \(3, 2, 37, 4\) \+ \(C,\)"):
        experts_mixture(router, experts[..., :3, :])
    with pytest.raises(ValueError, match=r"expert_outputs: expected shape"):
        experts_mixture(router, experts[..., 0])
    with pytest.raises(ValueError, match=r"expert_outputs: expected router_spikes' dtype torch.float32"):
        experts_mixture(router, experts.double())
    with pytest.raises(TypeError, match=r"router_spikes: expected a floating dtype"):
        experts_mixture(router.bool(), experts)
    with pytest.raises(TypeError, match=r"expert_outputs: expected a torch.Tensor"):
        experts_mixture(router, experts.tolist())
    with pytest.raises(TypeError, match=r"router_spikes: the 'triton' backend supports float32"):
        experts_mixture(router.double(), experts.double(), backend="triton")
    with pytest.raises(ValueError, match=r"backend: expected one of"):
        experts_mixture(router, experts, backend="fast")


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("block", ["emsa", "emsp"])
def test_modules_match_reference_backend(backend, block):
    device = BACKEND_DEVICE[backend]
    x = torch.randn(3, 2, 16, 3, 3, generator=torch.Generator().manual_seed(2)) * 3
    outputs = {}
    for be in ("torch", backend):
        torch.manual_seed(4)
        module = (EMSA(16, num_experts=3, expert_dim=8, scale=0.5, backend=be) if block == "emsa"
                  else EMSP(16, hidden_dim=32, backend=be)).to(device)
        for name, bn in module.named_modules():
            if name.endswith("_bn"):  # widen every BatchNorm so the θ = 1 neurons fire at a useful rate
                torch.nn.init.constant_(bn.weight, 4.0), torch.nn.init.constant_(bn.bias, 1.0)
        xin = x.to(device).requires_grad_()
        y = module(xin)
        (y * torch.linspace(-1, 1, y.numel(), device=device).reshape(y.shape)).sum().backward()
        outputs[be] = (y.detach().cpu(), xin.grad.cpu())
    (y_ref, gx_ref), (y, gx) = outputs["torch"], outputs[backend]
    assert y_ref.sum() > 0, "no output spikes: the test exercises nothing"
    assert torch.equal(y, y_ref)
    torch.testing.assert_close(gx, gx_ref, atol=1e-4, rtol=1e-4)


def test_modules_reject_bad_configuration():
    with pytest.raises(ValueError, match=r"num_experts: expected a positive int, got 0"):
        EMSA(16, num_experts=0)
    with pytest.raises(ValueError, match=r"hidden_dim: must be even"):
        EMSP(16, hidden_dim=33)
    with pytest.raises(ValueError, match=r"x: expected a \[T, B, C=16, H, W\] tensor"):
        EMSA(16, 2, 4)(torch.zeros(2, 2, 8, 3, 3))


def test_aot_specs_name_every_kernel_argument():
    from spikeops.kernels import experts_mixture as kernels
    for spec in kernels.aot_specs():
        assert set(spec["signature"]) | set(spec["constexprs"]) == set(spec["kernel"].arg_names), spec["name"]
