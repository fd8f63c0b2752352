"""Reference backbones, forward+backward of one small batch (cross-entropy loss): the pure-PyTorch version
(backend="torch") against spikeops "auto" (fused neurons and attention). Time and peak memory are measured
by benchmarks/conftest.py's ``run_case``; the ImageNet-size models are marked slow."""
import pytest
import torch

from benchmarks.conftest import require, run_case

from spikeops.models import qkformer, qkformer_bipolar, qsd, sdt_v2, semm, spikformer, spikformer_cifar

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

SMALL = {
    "qkformer_hst_4 (dim 64, 16x16, T=2, B=4)": (
        lambda b: qkformer.QKFormer(T=2, num_classes=10, embed_dim=64, num_heads=4, depths=(1, 1, 2), imagenet=False,
                                    backend=b), (4, 3, 16, 16)),
    "spikformer_8 (dim 64, 32x32, T=2, B=4)": (
        lambda b: spikformer.Spikformer(T=2, num_classes=10, embed_dim=64, num_heads=4, depth=2, backend=b),
        (4, 3, 32, 32)),
    "spikformer_cifar (dim 32, depth 1, 16x16, T=2, B=2)": (
        lambda b: spikformer_cifar.spikformer_cifar(embed_dim=32, depth=1, num_heads=2, T=2, backend=b),
        (2, 3, 16, 16)),
    "semm_spikformer_cifar (dim 32, depth 1, d_e 8, 16x16, T=2, B=2)": (
        lambda b: semm.semm_spikformer(embed_dim=32, depth=1, imagenet=False, num_classes=10, T=2, expert_dim=8,
                                       backend=b), (2, 3, 16, 16)),
    "qkformer_bipolar_hst (dim 32, 16x16, T=2, B=2)": (
        lambda b: qkformer_bipolar.qkformer_bipolar(T=2, num_classes=10, embed_dim=32, num_heads=2, depths=(1, 1, 1),
                                                    imagenet=False, backend=b), (2, 3, 16, 16)),
    "sdt_v2 (dims 16/32/64/64, 32x32, T=2, B=4)": (
        lambda b: sdt_v2.MetaSpikeFormer(T=2, num_classes=10, embed_dims=(16, 32, 64, 64), depths=(1, 1),
                                         num_heads=4, img_size=32, backend=b), (4, 3, 32, 32)),
    "qsd_sdt_v2 (4-bit, D=4, dims 16/32/64/64, 32x32, T=2, B=4)": (
        lambda b: qsd.qsd_transformer(T=2, num_classes=10, embed_dims=(16, 32, 64, 64), depths=(1, 1), num_heads=4,
                                      img_size=32, backend=b), (4, 3, 32, 32)),
}
LARGE = {
    "qkformer_hst_10_384 (224x224, T=4, B=2)": (lambda b: qkformer.qkformer_hst_10_384(backend=b), (2, 3, 224, 224)),
    "spikformer_8_384 (224x224, T=4, B=2)": (lambda b: spikformer.spikformer_8_384(backend=b), (2, 3, 224, 224)),
    "spikformer_4_384_cifar (32x32, T=4, B=8)": (lambda b: spikformer_cifar.spikformer_4_384_cifar(backend=b),
                                                 (8, 3, 32, 32)),
    "semm_spikformer_4_384_cifar (32x32, T=4, B=8)": (lambda b: semm.semm_spikformer_4_384_cifar(backend=b),
                                                      (8, 3, 32, 32)),
    "qkformer_bipolar_hst_4_384 (32x32, T=4, B=8)": (
        lambda b: qkformer_bipolar.qkformer_bipolar_hst_4_384(backend=b), (8, 3, 32, 32)),
    "sdt_v2_t (224x224, T=1, B=2)": (lambda b: sdt_v2.sdt_v2_t(backend=b), (2, 3, 224, 224)),
    "qsd_sdt_v2_t (224x224, T=1, B=2)": (lambda b: qsd.qsd_sdt_v2_t(backend=b), (2, 3, 224, 224)),
}


def _run(benchmark, name, build, shape, backend):
    if backend != "auto":
        require(backend, DEVICE)
    torch.manual_seed(0)
    model = build(backend).to(DEVICE)
    x = torch.rand(shape, device=DEVICE) * 2
    y = torch.zeros(shape[0], dtype=torch.long, device=DEVICE)

    def step():
        model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()

    run_case(benchmark, step, group=f"{name} {DEVICE} fwd+bwd", device=DEVICE, op_level_memory=False, model=name)


@pytest.mark.parametrize("backend", ["torch", "auto"])
@pytest.mark.parametrize("name", list(SMALL))
def test_model_fwd_bwd(benchmark, name, backend):
    build, shape = SMALL[name]
    _run(benchmark, name, build, shape, backend)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "auto"])
@pytest.mark.parametrize("name", list(LARGE))
def test_model_fwd_bwd_imagenet(benchmark, name, backend):
    build, shape = LARGE[name]
    _run(benchmark, name, build, shape, backend)
