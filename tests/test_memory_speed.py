"""benchmarks/memory_speed.py: the allocator-level memory of a training step, and the table and dominance check
the report is built from (no timing asserted)."""
import torch
from torch import nn

import spikeops
from benchmarks import memory_speed
from benchmarks.memory_speed import Configuration, dominated, measure_memory
from spikeops.models import qkformer

MIB = 2 ** 20


def _tiny(minimum: bool):
    def build(x):
        torch.manual_seed(0)
        model = qkformer.QKFormer(T=2, num_classes=4, embed_dim=32, num_heads=2, depths=(1, 1, 1), backend="cpu")
        return spikeops.minimum_memory(model) if minimum else model
    return build


class _Holds(nn.Module):
    """Keeps ``extra`` float32 elements alive between steps and a known activation for backward."""

    def __init__(self, extra: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1))
        self.extra, self.kept = extra, None

    def forward(self, x):
        self.kept = torch.zeros(self.extra)  # allocated in the step, alive after it: counted
        return (x * self.weight).exp()       # exp saves its output: x.numel() floats held for backward


def test_memory_counts_activations_and_what_a_model_keeps():
    x = torch.rand(1000)
    _, plain = measure_memory(Configuration("plain", lambda x: _Holds(0), False), x)
    _, keeps = measure_memory(Configuration("keeps", lambda x: _Holds(250_000), False), x)
    assert plain["after_forward"] >= x.numel() * 4           # exp's output, saved for its backward
    assert plain["after_forward"] < 2 * x.numel() * 4        # x * w is freed: only exp saves (x is the caller's)
    assert plain["peak"] >= plain["after_forward"]
    assert keeps["after_forward"] - plain["after_forward"] >= 250_000 * 4


def test_minimum_memory_holds_less_after_forward():
    x = torch.rand(1, 3, 32, 32)
    _, default = measure_memory(Configuration("default", _tiny(False), False), x)
    _, minimum = measure_memory(Configuration("minimum", _tiny(True), False), x)
    assert minimum["after_forward"] < default["after_forward"] / 2
    assert minimum["peak"] >= minimum["after_forward"]


def test_table_and_dominance():
    def config(label, peer, peak, step):
        c = Configuration(label, None, peer)
        c.result.update(after_forward=peak / 2, peak=peak, step_s=step)
        return c

    configs = [config("ours fast", False, 80 * MIB, 1.0), config("ours lean", False, 70 * MIB, 1.2),
               config(memory_speed.SJ_EAGER, True, 120 * MIB, 2.0), config("peer lean", True, 75 * MIB, 0.9)]
    assert dominated(configs) == [("peer lean", "ours fast")]
    table = memory_speed.markdown("model", configs)
    assert "| ours lean | 35.0 | 70.0 | 1200 | 1.67× |" in table
