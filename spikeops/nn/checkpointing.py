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
import warnings

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


def _stateful(module: nn.Module) -> list:
    """(submodule, its state names) for every stateful module under ``module``."""
    return [(m, names) for m in module.modules() if (names := _state_names(m))]


def _running_copies(batchnorms) -> list:
    """(BatchNorm, {running-statistic name: a copy}) for each of ``batchnorms``."""
    return [(bn, {name: getattr(bn, name).clone() for name in _RUNNING if getattr(bn, name) is not None})
            for bn in batchnorms]


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
        self.stateful = _stateful(block)
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
        self.running_before = _running_copies(self.batchnorms)
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


class _BlockProfile(spike_pack.SavedTensorsCounter):
    """Counts what autograd saves (``SavedTensorsCounter``), which candidate block was running when each storage
    was saved, and the FLOPs each block's matmuls and convolutions run (read from ``flop_mode``, a running
    ``FlopCounterMode``, as the block starts and ends). A block's own inputs are not the block's (a checkpoint
    keeps them too), nor are ``held_anyway``'s storages (parameters, buffers, the model's input)."""

    def __init__(self, blocks: list[nn.Module], held_anyway: set, flop_mode):
        super().__init__()
        self.owner: dict = {}
        self.flops: dict = {}
        self.current = None
        self.current_inputs: set = set()
        self.started_at = 0
        self.held_anyway, self.flop_mode = held_anyway, flop_mode
        self.handles = []
        for block in blocks:
            self.handles.append(block.register_forward_pre_hook(self._enter, with_kwargs=True))
            self.handles.append(block.register_forward_hook(self._leave, always_call=True))

    def _enter(self, block, args, kwargs):
        self.current, self.started_at = block, self.flop_mode.get_total_flops()
        self.current_inputs = {spike_pack.storage_key(t) for t in (*args, *kwargs.values())
                               if isinstance(t, torch.Tensor)}

    def _leave(self, block, args, output):
        self.flops[block] = self.flops.get(block, 0) + self.flop_mode.get_total_flops() - self.started_at
        self.current, self.current_inputs = None, set()

    def _record(self, t, out):
        count = len(self.saved)
        super()._record(t, out)
        if len(self.saved) > count and isinstance(t, torch.Tensor):  # a storage seen for the first time
            source = spike_pack.storage_key(t)
            owned = self.current is not None and source not in self.current_inputs and source not in self.held_anyway
            self.owner[next(reversed(self.saved))] = self.current if owned else None

    def held(self) -> tuple[dict, int]:
        """({block or None: bytes still held}, None collecting what no block owns; bytes still held in all,
        ``held_anyway`` left out)."""
        by_owner, total = {}, 0
        for key, nbytes in self.saved.items():
            if self._alive[key]() is not None:
                owner = self.owner.get(key)
                by_owner[owner] = by_owner.get(owner, 0) + nbytes
                total += nbytes if key not in self.held_anyway else 0
        return by_owner, total

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


@contextlib.contextmanager
def _state_kept(model: nn.Module):
    """Runs a training forward of ``model`` that leaves no trace: neuron state, BatchNorm running statistics,
    RNG and train/eval modes are as before afterwards."""
    before = _snapshot(_stateful(model))
    running = _running_copies(m for m in model.modules() if isinstance(m, _BATCHNORMS))
    modes = [(m, m.training) for m in model.modules()]
    devices = sorted({p.device.index for p in model.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices), torch.enable_grad():
        try:
            model.train()
            yield
        finally:
            for module, training in modes:
                module.training = training
            _restore(before)
            for bn, values in running:
                for name, value in values.items():
                    getattr(bn, name).copy_(value)


def _profile(model: nn.Module, blocks: list[nn.Module], example: tuple) -> tuple[dict, dict, int]:
    """One training forward of ``model`` on ``example``: ({block: bytes it holds for backward}, {block: FLOPs
    of its matmuls and convolutions}, bytes held in all), the held bytes as ``held_for_backward`` counts them
    (the storages of the example, the parameters and the buffers left out)."""
    from torch.utils.flop_counter import FlopCounterMode

    held_anyway = {spike_pack.storage_key(t) for t in (*example, *model.parameters(), *model.buffers())
                   if isinstance(t, torch.Tensor)}
    flop_mode = FlopCounterMode(display=False)
    profile = _BlockProfile(blocks, held_anyway, flop_mode)
    try:
        with _state_kept(model), profile, flop_mode:
            output = model(*example)
            held, total = profile.held()
            del output
    finally:
        profile.remove()
    return {b: held.get(b, 0) for b in blocks}, profile.flops, total


def _outermost(model: nn.Module, block_types: tuple[type, ...]) -> list[nn.Module]:
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
    return chosen


def _checkpoint(blocks) -> None:
    for block in blocks:
        if not _is_checkpointed(block):
            block.forward = functools.partial(_checkpointed_forward, block, type(block).forward)


def _within_budget(model: nn.Module, blocks: list[nn.Module], budget: float, example: tuple) -> list[nn.Module]:
    """The blocks to recompute so that the model holds at most ``budget`` bytes after a training forward on
    ``example``: by most bytes saved per FLOP recomputed first, checked by measuring again and extended
    while over budget. Replaces any earlier choice."""
    full_memory(model)
    held, flops, total = _profile(model, blocks, example)
    order = sorted(blocks, key=lambda b: held[b] / max(flops.get(b, 0), 1), reverse=True)
    count, estimate = 0, total
    while estimate > budget and count < len(order):
        estimate -= held[order[count]]
        count += 1
    while True:
        full_memory(model)
        _checkpoint(order[:count])
        if count == len(order) or _profile(model, blocks, example)[2] <= budget:
            return order[:count]
        count += 1


def minimum_memory(model: nn.Module, block_types=None, *, budget_mib: float | None = None,
                   example=None) -> nn.Module:
    """Every outermost submodule of ``model`` (``model`` itself excluded) whose type is in ``block_types``
    recomputes its activations in backward; returns ``model``. ``block_types=None`` takes
    ``model.checkpoint_block_types`` (declared by the spikeops backbones). Idempotent; state_dict, parameters
    and eval behaviour are unchanged. Raises ValueError when no submodule matches.

    ``budget_mib``: recompute only as many of those blocks as it takes for the model to hold at most that many
    MiB for backward after a training forward on ``example`` (the model's positional input: a tensor or a
    tuple), choosing the blocks that hold the most bytes per FLOP of matmul and convolution they recompute.
    The choice is measured on ``example`` by forwards that leave no trace (neuron state, running statistics,
    RNG and modes restored); a budget below what recomputing every block reaches recomputes every block, with
    a warning."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    blocks = _outermost(model, _check_block_types(model, block_types))
    if budget_mib is None:
        if example is not None:
            raise ValueError("example: only used with budget_mib (to measure which blocks to recompute), got an "
                             "example without a budget")
        _checkpoint(blocks)
        return model
    if isinstance(budget_mib, bool) or not isinstance(budget_mib, (int, float)) or not budget_mib >= 0:
        raise ValueError(f"budget_mib: expected a number of MiB >= 0 or None, got {budget_mib!r}")
    if example is None:
        raise ValueError("example: expected the model's input (a tensor or a tuple of positional arguments) to "
                         "measure the budget on, got None")
    example = example if isinstance(example, tuple) else (example,)
    chosen = _within_budget(model, blocks, budget_mib * 2 ** 20, example)
    if len(chosen) == len(blocks):
        held = _profile(model, blocks, example)[2]
        if held > budget_mib * 2 ** 20:
            warnings.warn(f"budget_mib={budget_mib}: recomputing every block, {type(model).__name__} still holds "
                          f"{held / 2 ** 20:.1f} MiB on this example", stacklevel=2)
    return model


def full_memory(model: nn.Module) -> nn.Module:
    """Undoes ``minimum_memory``: every block runs its plain forward again; returns ``model``."""
    for module in model.modules():
        if _is_checkpointed(module):
            del module.forward
    return model
