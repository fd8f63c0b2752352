"""Minimum-memory training: chosen blocks of a model recompute their activations in backward.

``minimum_memory(model, block_types=None)`` makes every outermost submodule of ``model`` whose type is in
``block_types`` (the backbones declare theirs as ``checkpoint_block_types``) run its training forward under
``torch.utils.checkpoint`` (non-reentrant): autograd then holds, per block, only what enters it, and backward
reruns the block's forward once before its backward. What enters a block is saved under the model's spike
packing (spikeops.nn.packing): a spike tensor a spikeops neuron produced crosses the boundary as bits, any
other tensor in its own dtype. ``full_memory(model)`` undoes it.

The recompute is the forward run again, so it must see what the forward saw and change nothing the forward
already changed:

* random numbers: ``torch.utils.checkpoint`` replays the forward's RNG state (dropout masks agree);
* BatchNorm running statistics: updated by the forward only; the recompute runs on copies of
  ``running_mean``, ``running_var`` and ``num_batches_tracked`` as the forward found them (a few floats per
  channel, kept from forward to backward), thrown away after;
* neuron state: every stateful module inside the block (spikeops neurons' ``v`` / ``v_seq``, SpikingJelly
  memories, anything listing ``state_names``) is put back to its value before the forward while the block
  recomputes, then to the value it had when the recompute began, so backward leaves the model's state as
  training without the mode does (also when several forwards, e.g. single-step calls over T, precede one
  backward).

Gradients, running statistics and neuron state are therefore those of the same model trained without the
mode (tested bit for bit: tests/test_checkpointing.py). In eval, under ``no_grad`` and while
``torch.compile`` traces, blocks run their plain forward.
"""
from __future__ import annotations

import contextlib
import functools

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..ops import spike_pack

__all__ = ["minimum_memory", "full_memory", "checkpointed_blocks"]

_BATCHNORMS = (nn.modules.batchnorm._BatchNorm,)
_RUNNING = ("running_mean", "running_var", "num_batches_tracked")


def _state_names(module: nn.Module) -> tuple[str, ...]:
    """The attributes holding ``module``'s own state between calls (none for stateless modules)."""
    names = getattr(module, "state_names", None)
    if names is None:
        memories = getattr(module, "_memories", None)  # SpikingJelly's MemoryModule
        names = tuple(memories) if isinstance(memories, dict) else ()
    return tuple(names)


def _snapshot(stateful) -> list:
    return [(module, {name: getattr(module, name) for name in names}) for module, names in stateful]


def _restore(snapshot) -> None:
    for module, values in snapshot:
        for name, value in values.items():
            setattr(module, name, value)


class _BlockRun:
    """The two contexts ``torch.utils.checkpoint`` runs one block call under: the forward records the state and
    running statistics it starts from; the recompute runs from those (on copies of the statistics) and puts
    back what it found."""

    def __init__(self, block: nn.Module):
        self.stateful = [(m, names) for m in block.modules() if (names := _state_names(m))]
        self.batchnorms = [m for m in block.modules() if isinstance(m, _BATCHNORMS) and m.track_running_stats]
        self.before = None
        self.running_before = []
        self.packing = False

    @contextlib.contextmanager
    def forward(self):
        self.before = _snapshot(self.stateful)
        # Running statistics as the forward found them: a layer may read them after its update (RepConv's
        # BNAndPad pads with them), so the recompute starts from these copies and updates them as the forward
        # did, leaving the real ones with the forward's single update.
        self.running_before = [(bn, {name: getattr(bn, name).clone() for name in _RUNNING
                                     if getattr(bn, name) is not None}) for bn in self.batchnorms]
        self.packing = spike_pack.packing_wanted()
        yield

    @contextlib.contextmanager
    def recompute(self):
        current = _snapshot(self.stateful)  # later forwards may have moved the state on since this block ran
        _restore(self.before)
        originals = [(bn, {name: getattr(bn, name) for name in values}) for bn, values in self.running_before]
        for bn, values in self.running_before:
            for name, value in values.items():
                setattr(bn, name, value.clone())  # cloned again: a second backward recomputes again
        # Packing as in the forward, so the operators that decide by it (marks, the spike max-pool) save the same
        # tensors; nothing is packed in the recompute (the checkpoint's hooks are on top).
        packing = spike_pack.pack_spikes() if self.packing else contextlib.nullcontext()
        try:
            with packing:
                yield
        finally:
            _restore(originals)
            _restore(current)

    def contexts(self):
        return self.forward(), self.recompute()


def _checkpointed_forward(block: nn.Module, plain_forward, *args, **kwargs):
    if not (block.training and torch.is_grad_enabled()) or torch.compiler.is_compiling():
        return plain_forward(block, *args, **kwargs)
    run = _BlockRun(block)
    return checkpoint(plain_forward, block, *args, use_reentrant=False, context_fn=run.contexts, **kwargs)


def _is_checkpointed(module: nn.Module) -> bool:
    forward = module.__dict__.get("forward")
    return isinstance(forward, functools.partial) and forward.func is _checkpointed_forward


def checkpointed_blocks(model: nn.Module) -> list[str]:
    """Names of ``model``'s submodules that recompute in backward."""
    return [name for name, module in model.named_modules() if _is_checkpointed(module)]


def _check_block_types(model: nn.Module, block_types) -> tuple[type, ...]:
    if block_types is None:
        block_types = getattr(model, "checkpoint_block_types", None)
        if block_types is None:
            raise ValueError(f"block_types: {type(model).__name__} declares no checkpoint_block_types; pass the "
                             "types of the blocks to recompute, e.g. block_types=(MyBlock,)")
    if isinstance(block_types, type):
        block_types = (block_types,)
    block_types = tuple(block_types)
    if not block_types or not all(isinstance(t, type) and issubclass(t, nn.Module) for t in block_types):
        raise ValueError(f"block_types: expected one or more nn.Module subclasses, got {block_types!r}")
    return block_types


def minimum_memory(model: nn.Module, block_types=None) -> nn.Module:
    """Every outermost submodule of ``model`` (``model`` itself excluded) whose type is in ``block_types``
    recomputes its activations in backward; returns ``model``. ``block_types=None`` takes
    ``model.checkpoint_block_types`` (declared by the spikeops backbones). Idempotent; state_dict, parameters
    and eval behaviour are unchanged. Raises ValueError when no submodule matches."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    block_types = _check_block_types(model, block_types)
    chosen = []

    def visit(module: nn.Module) -> None:
        for child in module.children():
            if isinstance(child, block_types):
                chosen.append(child)
            else:
                visit(child)

    visit(model)
    if not chosen:
        raise ValueError(f"block_types: no submodule of {type(model).__name__} is one of "
                         f"{[t.__name__ for t in block_types]}")
    for block in chosen:
        if not _is_checkpointed(block):
            block.forward = functools.partial(_checkpointed_forward, block, type(block).forward)
    return model


def full_memory(model: nn.Module) -> nn.Module:
    """Undoes ``minimum_memory``: every block runs its plain forward again; returns ``model``."""
    for module in model.modules():
        if _is_checkpointed(module):
            del module.forward
    return model
