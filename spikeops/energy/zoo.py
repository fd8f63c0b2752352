"""Backbones the command line can profile by name, built with random weights at a small input.

Names: every ``spikeops.models.list_models()`` entry, and SpikingJelly's model zoo as
``spikingjelly:<name>``. Random weights leave most neurons silent, so ``build`` first calibrates the
batch-norm statistics on a random batch (the firing rates are then those of a freshly initialised
network, not of a trained one; pass a trained model to ``profile`` for real figures).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .profiler import reset_neuron_states

__all__ = ["ZooEntry", "available_models", "build", "calibrate_batch_norm"]

SPIKINGJELLY_PREFIX = "spikingjelly:"


@dataclass(frozen=True)
class ZooEntry:
    """``make(T, num_classes, backend) -> model``; the model takes ``input_shape(T, batch, image_size)``."""
    make: Callable
    image_size: int
    time_major_input: bool = False

    def input_shape(self, T: int, batch: int, image_size: int) -> tuple:
        return (T, batch, 3, image_size, image_size) if self.time_major_input else (batch, 3, image_size, image_size)


def _spikeops_entries() -> dict[str, ZooEntry]:
    try:
        models = importlib.import_module("spikeops.models")
    except ImportError:
        return {}
    entries = {}
    for name in models.list_models():
        # The CIFAR variants keep the 32x32 geometry; the ImageNet ones downsample 16x, so 64x64 gives 4x4 tokens.
        size = 32 if "_4_" in name or "cifar" in name else 64
        entries[name] = ZooEntry(lambda T, num_classes, backend, _n=name: models.create_model(
            _n, T=T, num_classes=num_classes, backend=backend), size)
    return entries


def _spikingjelly_entries() -> dict[str, ZooEntry]:
    try:
        zoo = importlib.import_module("spikingjelly.activation_based.model")
        sew = importlib.import_module("spikingjelly.activation_based.model.sew_resnet")
        sj = importlib.import_module("spikingjelly.activation_based")
    except ImportError:
        return {}

    def sew_resnet(builder):
        def make(T, num_classes, backend):
            model = builder(cnf="ADD", num_classes=num_classes, spiking_neuron=sj.neuron.IFNode, detach_reset=True,
                            surrogate_function=sj.surrogate.ATan())
            sj.functional.set_step_mode(model, "m")
            return model
        return make

    entries = {
        "spikformer_cifar10": ZooEntry(lambda T, num_classes, backend: zoo.spikformer_cifar10(
            T=T, num_classes=num_classes), 32),
        "spikformer_ti": ZooEntry(lambda T, num_classes, backend: zoo.spikformer_ti(
            T=T, img_size_h=64, img_size_w=64, num_classes=num_classes), 64),
        "spikformer_s": ZooEntry(lambda T, num_classes, backend: zoo.spikformer_s(
            T=T, img_size_h=64, img_size_w=64, num_classes=num_classes), 64),
        "qkformer_10_384": ZooEntry(lambda T, num_classes, backend: zoo.qkformer_10_384(
            T=T, num_classes=num_classes), 64),
        "sdt_8_384": ZooEntry(lambda T, num_classes, backend: zoo.sdt_8_384(T=T, num_classes=num_classes), 64),
        "sew_resnet18": ZooEntry(sew_resnet(sew.sew_resnet18), 64, time_major_input=True),
        "sew_resnet34": ZooEntry(sew_resnet(sew.sew_resnet34), 64, time_major_input=True),
    }
    return {SPIKINGJELLY_PREFIX + name: entry for name, entry in entries.items()}


def available_models() -> dict[str, ZooEntry]:
    return {**_spikeops_entries(), **_spikingjelly_entries()}


def calibrate_batch_norm(model: nn.Module, example: torch.Tensor) -> None:
    """Sets every batch norm's running statistics to those of ``example`` (one no-grad forward with only
    the BN layers in training mode), then leaves the model in eval mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    model.eval()
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: one batch sets the statistics exactly
        m.train()
    try:
        with torch.no_grad():
            model(example)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
            m.eval()
    reset_neuron_states(model)  # the state the calibration pass left behind


def build(name: str, *, T: int = 4, batch_size: int = 1, image_size: int | None = None, num_classes: int = 10,
          backend: str = "torch", seed: int = 0, calibration_batch: int = 4) -> tuple[nn.Module, torch.Tensor]:
    """The model ``name`` with random weights (seeded) and calibrated BN, and a random example input."""
    entries = available_models()
    if name not in entries and SPIKINGJELLY_PREFIX + name in entries:
        name = SPIKINGJELLY_PREFIX + name
    if name not in entries:
        raise ValueError(f"name: expected one of {sorted(entries)}, got {name!r}")
    for arg, value in (("T", T), ("batch_size", batch_size), ("num_classes", num_classes),
                       ("calibration_batch", calibration_batch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{arg}: expected a positive int, got {value!r}")
    entry = entries[name]
    size = entry.image_size if image_size is None else image_size
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = entry.make(T, num_classes, backend)
    calibrate_batch_norm(model, torch.rand(entry.input_shape(T, calibration_batch, size), generator=generator))
    return model, torch.rand(entry.input_shape(T, batch_size, size), generator=generator)
