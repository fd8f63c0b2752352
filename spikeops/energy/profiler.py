"""``profile(model, example_input)``: one forward pass with hooks, turned into per-layer operation counts.

How calls are seen:
  * conv / linear / matmul calls anywhere in the forward (modules or functional code) are caught with a
    ``TorchFunctionMode`` and attributed to the innermost running module;
  * a module that computes something the function mode cannot see (a fused attention kernel) reports its
    own ops: an ``energy_ops(inputs, output)`` method, or a counter given to ``register_module_counter``.
    Its own calls are then not counted automatically (its sub-modules still are);
  * an operator entry point given a counter with ``register_counter(op_name, counter)`` (observed by
    name, see ``hooks``), or a function wrapped with ``spikeops.energy.hooks.counted(counter)``, reports
    its own ops the same way, wherever it is called from;
  * a custom operator (``torch.ops.<ns>.<name>``) can be given a counter with ``register_op_counter``;
  * spiking neurons (spikeops ``BaseNeuron``, SpikingJelly ``BaseNode``, anything registered with
    ``register_neuron_type``) are watched to learn T and B, count neurons and measure their firing rates.

Batch norm, pooling, residual adds and the neuron updates are not synaptic operations here (BN is
assumed folded into the preceding convolution).
"""
from __future__ import annotations

import sys
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from . import hooks
from .counting import DEFAULT_MAX_SPIKE_LEVEL, OpCount, count_conv, count_linear, count_matmul, spike_stats
from .report import EnergyProfile, LayerRecord, NeuronRecord

__all__ = ["profile", "register_neuron_type", "register_module_counter", "register_op_counter"]

# Neuron base classes found by name, so that nothing is imported that the profiled model does not use.
_KNOWN_NEURON_CLASSES = (
    ("spikeops.nn.neurons", "BaseNeuron"),
    ("spikingjelly.activation_based.neuron", "BaseNode"),
    ("spikeops.nn.neurons", "LIFNeuron"),
)
_registered_neuron_types: list[type] = []
_module_counters: dict[type, Callable] = {}
_op_counters: dict[str, Callable] = {}

_CONV = {torch.conv1d, torch.conv2d, torch.conv3d}
_LINEAR = {F.linear}
_MATMUL = {torch.matmul, torch.Tensor.matmul, torch.mm, torch.Tensor.mm, torch.bmm, torch.Tensor.bmm}
_ADD_MATMUL = {torch.addmm, torch.Tensor.addmm, torch.baddbmm, torch.Tensor.baddbmm}


def register_neuron_type(cls: type) -> type:
    """Marks ``cls`` (an nn.Module subclass) as a spiking neuron; usable as a class decorator."""
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"cls: expected an nn.Module subclass, got {cls!r}")
    if cls not in _registered_neuron_types:
        _registered_neuron_types.append(cls)
    return cls


def register_module_counter(cls: type, counter: Callable) -> None:
    """``counter(module, inputs, output) -> iterable of OpCount`` reports what instances of ``cls`` compute
    themselves (for classes one cannot give an ``energy_ops`` method)."""
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"cls: expected an nn.Module subclass, got {cls!r}")
    if not callable(counter):
        raise TypeError(f"counter: expected a callable (module, inputs, output) -> [OpCount], got {counter!r}")
    _module_counters[cls] = counter


def _op_name(op) -> str | None:
    schema = getattr(op, "_schema", None)
    if schema is not None:
        return schema.name
    return getattr(op, "_qualified_op_name", None)


def register_op_counter(op, counter: Callable) -> None:
    """``counter(args, kwargs, output) -> iterable of OpCount`` for a custom operator, given as
    ``torch.ops.ns.name`` (or one overload of it) or as the string ``"ns::name"``."""
    name = op if isinstance(op, str) else _op_name(op)
    if not name or "::" not in name:
        raise ValueError(f"op: expected a torch.ops operator or a 'namespace::name' string, got {op!r}")
    if not callable(counter):
        raise TypeError(f"counter: expected a callable (args, kwargs, output) -> [OpCount], got {counter!r}")
    _op_counters[name] = counter


def _neuron_types() -> tuple[type, ...]:
    found = list(_registered_neuron_types)
    for module_name, class_name in _KNOWN_NEURON_CLASSES:
        cls = getattr(sys.modules.get(module_name), class_name, None)
        if isinstance(cls, type):
            found.append(cls)
    return tuple(found)


def _module_counter(module: nn.Module) -> Callable | None:
    own = getattr(module, "energy_ops", None)
    if callable(own):
        return lambda _module, inputs, output: own(inputs, output)
    for cls in type(module).__mro__:
        if cls in _module_counters:
            return _module_counters[cls]
    return None


def _checked_counts(counts, who: str) -> list[OpCount]:
    counts = list(counts or ())
    for c in counts:
        if not isinstance(c, OpCount):
            raise TypeError(f"{who}: expected an iterable of spikeops.energy.OpCount, got an element {c!r}")
    return counts


@dataclass
class _Frame:
    name: str
    counted_by_hook: bool
    calls: int = 0


@dataclass
class _NeuronCall:
    name: str
    kind: str
    input_shape: tuple
    multi_step: bool
    spikes: float
    slots: int
    spike_valued: bool


@dataclass
class _Trace:
    ops: list = field(default_factory=list)        # (module name, index within the invocation, OpCount)
    neurons: list = field(default_factory=list)    # _NeuronCall, in call order
    stack: list = field(default_factory=list)      # _Frame
    counting_paused: bool = False                  # while a counter runs, its own torch calls are not ops

    def run_counter(self, counter, *args) -> list:
        self.counting_paused = True
        try:
            return list(counter(*args) or ())
        finally:
            self.counting_paused = False


class _OpRecorder(TorchFunctionMode):
    def __init__(self, trace: _Trace, max_spike_level: int):
        super().__init__()
        self.trace = trace
        self.max_spike_level = max_spike_level

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        output = func(*args, **kwargs)
        frame = self.trace.stack[-1] if self.trace.stack else None
        if self.trace.counting_paused or (frame is not None and frame.counted_by_hook):
            return output
        self._record(self._count(func, args, kwargs, output), frame)
        return output

    def _record(self, counts, frame: _Frame | None, default_label: str = "") -> None:
        for count in counts:
            if default_label and not count.label:
                count.label = default_label
            self.trace.ops.append((frame.name if frame else "", frame.calls if frame else 0, count))
            if frame is not None:
                frame.calls += 1

    def call_counted(self, fn, counter, args, kwargs):
        """Runs a counted operator (``hooks.register_counter`` / ``hooks.counted``): its inner calls are not
        counted, its counter is."""
        caller = self.trace.stack[-1] if self.trace.stack else None
        self.trace.stack.append(_Frame(caller.name if caller else "", counted_by_hook=True))
        try:
            output = fn(*args, **kwargs)
        finally:
            self.trace.stack.pop()
        self._record(_checked_counts(self.trace.run_counter(counter, args, kwargs, output),
                                     f"energy counter of {fn.__name__}"), caller, fn.__name__)
        return output

    def _count(self, func, args, kwargs, output) -> list[OpCount]:
        level = self.max_spike_level
        if _is_one_of(func, _CONV) or _is_one_of(func, _LINEAR):
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            count = count_conv if _is_one_of(func, _CONV) else count_linear
            return [count(args[0], args[1], bias, output, max_spike_level=level)]
        if _is_one_of(func, _MATMUL):
            return [count_matmul(args[0], args[1], output, max_spike_level=level)]
        if _is_one_of(func, _ADD_MATMUL):
            return [count_matmul(args[1], args[2], output, max_spike_level=level)]
        if func is torch.Tensor.__rmatmul__:
            return [count_matmul(args[1], args[0], output, max_spike_level=level)]
        name = _op_name(func)
        if name in _op_counters:
            return _checked_counts(self.trace.run_counter(_op_counters[name], args, kwargs, output),
                                   f"op counter of {name}")
        return []


def _is_one_of(func, group: set) -> bool:
    try:
        return func in group
    except TypeError:  # an unhashable callable is none of ours
        return False


def _first_tensor(value):
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        for v in value:
            t = _first_tensor(v)
            if t is not None:
                return t
    return None


def _install_hooks(model: nn.Module, trace: _Trace, max_spike_level: int) -> list:
    neuron_types = _neuron_types()
    handles = []
    for name, module in model.named_modules():
        counter = _module_counter(module)
        is_neuron = isinstance(module, neuron_types)

        def push(mod, inputs, _name=name, _hooked=counter is not None):
            trace.stack.append(_Frame(_name, _hooked))

        def pop(mod, inputs, output, _name=name, _counter=counter, _is_neuron=is_neuron):
            frame = trace.stack.pop()
            if _counter is not None and output is not None:  # None: the forward raised
                counts = trace.run_counter(_counter, mod, inputs, output)
                for count in _checked_counts(counts, f"energy_ops of {_name or 'the model'}"):
                    trace.ops.append((_name, frame.calls, count))
                    frame.calls += 1
            if _is_neuron:
                x, spikes = _first_tensor(inputs), _first_tensor(output)
                if x is not None and spikes is not None:
                    stats = spike_stats(spikes, max_spike_level)
                    trace.neurons.append(_NeuronCall(_name, type(mod).__name__, tuple(x.shape),
                                                     getattr(mod, "step_mode", "m") == "m", stats.spikes,
                                                     stats.slots, stats.spike_valued))

        handles.append(module.register_forward_pre_hook(push))
        handles.append(module.register_forward_hook(pop, always_call=True))
    return handles


def reset_neuron_states(model: nn.Module) -> None:
    """Calls ``reset()`` on every stateful spiking neuron of ``model``."""
    for module in model.modules():
        reset = getattr(module, "reset", None)
        if callable(reset) and isinstance(module, _neuron_types()):
            reset()


def _infer_time_and_batch(trace: _Trace, time_steps, batch_size, example_args) -> tuple[int, int]:
    calls = trace.neurons
    if time_steps is None:
        if not calls:
            time_steps = 1
        elif calls[0].multi_step:
            time_steps = calls[0].input_shape[0]
        else:  # single-step neurons run once per time step
            time_steps = sum(1 for c in calls if c.name == calls[0].name)
    if batch_size is None:
        if calls:
            shape = calls[0].input_shape
            batch_size = (shape[1] if len(shape) > 1 else 1) if calls[0].multi_step else (shape[0] if shape else 1)
        else:
            first = _first_tensor(example_args)
            batch_size = first.shape[0] if first is not None and first.dim() > 0 else 1
    for name, value in (("time_steps", time_steps), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return time_steps, batch_size


def _steps_of(shape: tuple, T: int, B: int) -> int:
    """Time steps one call covers, from the time-major layout of its input ([T*B, ...] or [T, B, ...])."""
    if T > 1 and shape and (shape[0] == T * B or (len(shape) > 2 and shape[0] == T and shape[1] == B)):
        return T
    return 1


def _repeats_over_time(x: torch.Tensor, T: int) -> bool:
    per_step = x.reshape(T, -1)
    return bool((per_step == per_step[:1]).all())


def _layers(trace: _Trace, T: int, B: int) -> list[LayerRecord]:
    grouped: dict[tuple, list[OpCount]] = defaultdict(list)
    ops_per_module: dict[str, set] = defaultdict(set)
    for module_name, index, count in trace.ops:
        key = (module_name, index)
        grouped[key].append(count)
        ops_per_module[module_name].add(index)
    layers = []
    for (module_name, index), counts in grouped.items():
        first = counts[0]
        name = module_name or "(model)"
        if len(ops_per_module[module_name]) > 1:
            name = f"{name}:{first.label or first.kind + str(index)}"
        macs = time_steps = mac_ops = weight_passes = spikes = slots = 0.0
        for c in counts:
            steps = _steps_of(c.input_shape, T, B)
            once = not c.spike_driven and steps > 1 and _repeats_over_time(c.real_input, T)
            macs += c.macs / B
            time_steps += steps
            if not c.spike_driven:
                mac_ops += c.macs / B / (steps if once else 1)
            weight_passes += 1 if once else steps
            spikes += c.spikes
            slots += c.slots
        spike_driven = all(c.spike_driven for c in counts)
        rate = spikes / slots if slots else 0.0
        layers.append(LayerRecord(
            name=name, kind=first.kind, flops=macs / time_steps, time_steps=int(time_steps),
            firing_rate=rate if spike_driven else None, spike_driven=spike_driven,
            sops=rate * macs if spike_driven else 0.0, mac_ops=mac_ops,
            params=max(c.weight_params for c in counts), weight_passes=int(weight_passes)))
    return layers


def _neuron_records(trace: _Trace, B: int) -> list[NeuronRecord]:
    grouped: dict[str, list[_NeuronCall]] = defaultdict(list)
    for call in trace.neurons:
        grouped[call.name].append(call)
    records = []
    for name, calls in grouped.items():
        steps = sum(c.input_shape[0] if c.multi_step and c.input_shape else 1 for c in calls)
        slots = sum(c.slots for c in calls)
        spikes = sum(c.spikes for c in calls)
        records.append(NeuronRecord(name=name or "(model)", kind=calls[0].kind, neurons=slots / B / steps,
                                    time_steps=steps, spikes=spikes / B, firing_rate=spikes / slots if slots else 0.0,
                                    spike_valued=all(c.spike_valued for c in calls)))
    return records


def profile(model: nn.Module, example_input, *, time_steps: int | None = None, batch_size: int | None = None,
            max_spike_level: int = DEFAULT_MAX_SPIKE_LEVEL) -> EnergyProfile:
    """Runs ``model(example_input)`` once (no grad) and returns its per-layer operation counts.

    The model runs in whatever mode it is in: call ``model.eval()`` first for inference figures (in
    training mode batch norm uses, and updates, batch statistics).

    example_input: a tensor, or a tuple of positional arguments.
    time_steps, batch_size: inferred from the first spiking neuron's input (multi-step: [T, B, ...];
        single-step: [B, ...], T = number of its calls) when not given; T = 1 without neurons.
    max_spike_level: largest |value| still counted as a (multi-bit) spike.
    Neuron states are reset before and after the run. All counts are per sample.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if isinstance(max_spike_level, bool) or not isinstance(max_spike_level, int) or max_spike_level < 1:
        raise ValueError(f"max_spike_level: expected a positive int, got {max_spike_level!r}")
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    trace = _Trace()
    handles = _install_hooks(model, trace, max_spike_level)
    reset_neuron_states(model)
    if hooks.active_recorder is not None:
        raise RuntimeError("profile: another profile is already running (profiles cannot nest)")
    recorder = _OpRecorder(trace, max_spike_level)
    try:
        hooks.active_recorder = recorder
        with torch.no_grad(), recorder:
            model(*args)
    finally:
        hooks.active_recorder = None
        for handle in handles:
            handle.remove()
        reset_neuron_states(model)
    T, B = _infer_time_and_batch(trace, time_steps, batch_size, args)
    return EnergyProfile(layers=_layers(trace, T, B), neurons=_neuron_records(trace, B), time_steps=T,
                         batch_size=B)
