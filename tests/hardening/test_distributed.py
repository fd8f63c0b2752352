"""Issue 18, "Also": a backbone training step under DDP and under FSDP2 (``torch.distributed.fsdp.fully_shard``),
gloo on CPU with 2 processes, gives the gradients of one process on the whole batch.

QKFormer (stateless spikeops neurons, the fused spike-gate token attention and SSA on the ``cpu`` backend) in
eval mode: BatchNorm then uses its running statistics, so each sample's loss depends on that sample alone and
the mean of the two ranks' mean-loss gradients is the one-process gradient of the mean loss (in train mode
BatchNorm's batch statistics differ per rank, as in any DDP job without SyncBatchNorm)."""
import datetime
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import spikeops
from spikeops.models import qkformer

pytestmark = pytest.mark.skipif(not spikeops.backends.extension_available() or not dist.is_available()
                                or not dist.is_gloo_available(), reason="needs spikeops._C and gloo")
WORLD = 2
BATCH = 4


def _model():
    torch.manual_seed(0)
    model = qkformer.QKFormer(T=2, num_classes=4, embed_dim=32, num_heads=2, depths=(1, 1, 1), imagenet=False,
                              backend="cpu")
    return model.eval()


def _batch():
    g = torch.Generator().manual_seed(1)
    return torch.rand(BATCH, 3, 16, 16, generator=g) * 2, torch.arange(BATCH) % 4


def _step(model, x, y):
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    return loss.detach()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, port, mode, result_path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=120))
    try:
        model = _model()
        names = [name for name, _ in model.named_parameters()]
        if mode == "ddp":
            wrapped = torch.nn.parallel.DistributedDataParallel(model)
        else:
            from torch.distributed.fsdp import fully_shard
            for block in list(model.modules()):
                if isinstance(block, qkformer.QKFormerBlock):
                    fully_shard(block)
            wrapped = fully_shard(model)
        x, y = _batch()
        shard = slice(rank * BATCH // WORLD, (rank + 1) * BATCH // WORLD)
        _step(wrapped, x[shard], y[shard])
        grads = {}
        for name, p in zip(names, model.parameters()):
            g = p.grad
            if g is not None and hasattr(g, "full_tensor"):  # FSDP2: a sharded DTensor
                g = g.full_tensor()
            grads[name] = None if g is None else g.detach().clone()
        if rank == 0:
            torch.save(grads, result_path)
        # Tear down together: a rank that destroys its group while the other still works (rank 0 saving) can
        # make gloo's connection threads abort the other process ("terminate called without an active
        # exception"), which a CI run hit once.
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("mode", ["ddp", "fsdp2"])
def test_training_step_gradients_equal_one_process(mode, tmp_path):
    result = tmp_path / f"{mode}.pt"
    mp.start_processes(_worker, args=(_free_port(), mode, str(result)), nprocs=WORLD, join=True, start_method="spawn")
    got = torch.load(result)
    torch.set_num_threads(1)
    model = _model()
    _step(model, *_batch())
    want = {name: p.grad for name, p in model.named_parameters()}
    assert set(got) == set(want)
    checked = 0
    for name, g in want.items():
        if g is None:
            assert got[name] is None or not got[name].any(), name
            continue
        torch.testing.assert_close(got[name], g, atol=1e-6, rtol=1e-4, msg=lambda m: f"{mode} {name}: {m}")
        checked += 1
    assert checked > 10
