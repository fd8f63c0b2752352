"""Training the reference backbones on CPU: a few AdamW steps on a fixed synthetic batch reduce the loss,
plainly, under torch.distributed DDP (gloo, 2 processes on 127.0.0.1) and under torch.compile."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from spikeops.models import qkformer, spikformer

STEPS = 6


def tiny_model(kind, backend):
    torch.manual_seed(0)
    if kind == "qkformer":
        return qkformer.QKFormer(T=2, num_classes=4, embed_dim=32, num_heads=2, depths=(1, 1, 1), imagenet=False,
                                 backend=backend)
    return spikformer.Spikformer(T=2, num_classes=4, embed_dim=32, num_heads=2, depth=1, backend=backend)


def synthetic_batch(kind):
    g = torch.Generator().manual_seed(1)
    size = 16 if kind == "qkformer" else 32
    return torch.rand(8, 3, size, size, generator=g) * 2, torch.arange(8) % 4


def train(model, x, y, steps=STEPS, lr=1e-2):
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("backend", ["cpu", "torch"])
@pytest.mark.parametrize("kind", ["qkformer", "spikformer"])
def test_a_few_steps_reduce_the_loss(kind, backend):
    x, y = synthetic_batch(kind)
    losses = train(tiny_model(kind, backend), x, y)
    assert losses[-1] < losses[0], losses


def test_torch_compile_trains_and_matches_eager():
    x, y = synthetic_batch("qkformer")
    eager = tiny_model("qkformer", "cpu")
    compiled_model = tiny_model("qkformer", "cpu")
    # aot_eager: Dynamo capture + AOTAutograd through the spikeops custom ops and their fake kernels, without
    # inductor's C++ code generation (minutes on a 2-core CPU); `make test` on a GPU box exercises the same graph.
    compiled = torch.compile(compiled_model, backend="aot_eager")
    torch.testing.assert_close(compiled(x), eager(x), rtol=1e-4, atol=1e-5)
    losses = train(compiled, x, y, steps=4)
    assert losses[-1] < losses[0], losses


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world_size, port, result_path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size, timeout=__import__("datetime").timedelta(60))
    try:
        model = torch.nn.parallel.DistributedDataParallel(tiny_model("qkformer", "cpu"))
        x, y = synthetic_batch("qkformer")
        shard = slice(rank * 4, rank * 4 + 4)
        losses = train(model, x[shard], y[shard])
        total = torch.tensor([losses[0], losses[-1]])
        dist.all_reduce(total)
        checksum = torch.cat([p.detach().flatten() for p in model.parameters()]).sum().reshape(1)
        gathered = [torch.zeros(1) for _ in range(world_size)]
        dist.all_gather(gathered, checksum)
        if rank == 0:
            torch.save({"first": total[0].item(), "last": total[1].item(), "checksums": gathered}, result_path)
    finally:
        dist.destroy_process_group()


def test_ddp_gloo_two_processes(tmp_path):
    result = tmp_path / "ddp.pt"
    mp.start_processes(_ddp_worker, args=(2, _free_port(), str(result)), nprocs=2, join=True, start_method="spawn")
    out = torch.load(result)
    assert out["last"] < out["first"], out
    assert torch.equal(out["checksums"][0], out["checksums"][1]), "DDP replicas diverged"
