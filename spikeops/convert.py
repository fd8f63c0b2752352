"""``spikeops.convert(model)``: swap SpikingJelly's IFNode / LIFNode / ParametricLIFNode, and the classes the
neuron table's kinds stand in for (QIFNode, EIFNode), for the fused spikeops neurons, keeping every argument, learnable parameter and the current state.

Only the exact SpikingJelly classes are converted: a subclass may override the dynamics (OTTT, LIAF,
...), so it is left alone and reported, as is any option spikeops cannot reproduce. Nothing is
changed silently: every SpikingJelly neuron found appears in the report, either replaced or left
alone with the reason. Both SpikingJelly lines are handled: 2.0 (``activation_based``) and 0.0.0.0.x,
whose legacy ``clock_driven`` IFNode / LIFNode / ParametricLIFNode and MultiStep* classes are converted too.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from .backends import BACKENDS
from .nn import table_neurons
from .nn.batchnorm_fusion import fuse_sequential_batchnorms
from .nn.packing import enable_spike_packing
from .nn.neurons import IF, LIF, PLIF, BaseNeuron
from .ops.neuron.table import NEURON_KINDS

__all__ = ["convert", "ConversionReport", "ConversionError", "ReplacedNeuron", "LeftAloneNeuron", "FusedBatchNorm"]

_SJ_NEURON_PACKAGE = "spikingjelly.activation_based.neuron"


@dataclass(frozen=True)
class ReplacedNeuron:
    name: str    # qualified module name in the model ("" for the model itself)
    source: str  # SpikingJelly class name
    target: str  # spikeops class name


@dataclass(frozen=True)
class LeftAloneNeuron:
    name: str
    source: str
    reason: str


@dataclass(frozen=True)
class FusedBatchNorm:
    batchnorm: str  # the module ending in the BatchNorm (a multi-step BatchNorm or a SeqToANNContainer)
    neuron: str     # the spikeops neuron it feeds, which now runs the BatchNorm fused in


@dataclass
class ConversionReport:
    """What ``convert`` did to each SpikingJelly neuron of the model, and the BatchNorms it fused."""

    replaced: list[ReplacedNeuron] = field(default_factory=list)
    left_alone: list[LeftAloneNeuron] = field(default_factory=list)
    fused: list[FusedBatchNorm] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """True when every SpikingJelly neuron of the model now runs on spikeops."""
        return not self.left_alone

    def __str__(self) -> str:
        lines = [f"spikeops.convert: {len(self.replaced)} neuron(s) replaced, {len(self.left_alone)} left alone"]
        lines += [f"  replaced    {r.name or '<model>'}: {r.source} -> spikeops.{r.target}" for r in self.replaced]
        lines += [f"  left alone  {s.name or '<model>'}: {s.source}: {s.reason}" for s in self.left_alone]
        lines += [f"  fused       {f.batchnorm} -> {f.neuron}: BatchNorm runs inside the neuron" for f in self.fused]
        return "\n".join(lines)


class ConversionError(ValueError):
    """Raised by ``convert(..., strict=True)`` when some SpikingJelly neuron cannot be converted.
    The model is not modified; ``report`` lists every neuron and reason."""

    def __init__(self, report: ConversionReport):
        super().__init__(f"strict conversion failed: {len(report.left_alone)} SpikingJelly neuron(s) have no exact "
                         f"spikeops equivalent\n{report}")
        self.report = report


_SJ_LEGACY_NEURON_PACKAGE = "spikingjelly.clock_driven.neuron"


@dataclass(frozen=True)
class _SpikingJellyLines:
    """The installed SpikingJelly neuron modules: ``activation_based`` (2.0, and 0.0.0.0.14 which has both
    lines) and the legacy ``clock_driven`` (0.0.0.0.x; None when absent or when it is spikeops.legacy's)."""

    activation_based: object
    clock_driven: object

    def bases(self) -> tuple:
        # Looked up one by one: 0.0.0.0.14 has BaseNode but neither SimpleBaseNode nor NonSpikingBaseNode.
        found = []
        for line, names in ((self.activation_based, ("BaseNode", "SimpleBaseNode", "NonSpikingBaseNode")),
                            (self.clock_driven, ("BaseNode",))):
            found += [getattr(line, n) for n in names if line is not None and isinstance(getattr(line, n, None), type)]
        return tuple(found)


def _spikingjelly_neuron_module():
    try:
        from spikingjelly.activation_based import neuron
    except ImportError:
        neuron = None
    try:
        import sys

        from spikingjelly.clock_driven import neuron as legacy
        if getattr(sys.modules.get("spikingjelly.clock_driven"), "__spikeops_legacy__", False):
            legacy = None  # spikeops.legacy's neurons are spikeops neurons already
    except ImportError:
        legacy = None
    if neuron is None and legacy is None:
        return None
    return _SpikingJellyLines(neuron, legacy)


def _is_spikingjelly_neuron(module: nn.Module, sj_neuron) -> bool:
    kind = type(module).__module__
    return (isinstance(module, sj_neuron.bases()) or kind.startswith(_SJ_NEURON_PACKAGE)
            or kind.startswith(_SJ_LEGACY_NEURON_PACKAGE))


def _neuron_slots(model: nn.Module, sj_neuron):
    """Every (parent, attribute, neuron, qualified name) where a SpikingJelly neuron sits, without
    descending into the neurons themselves. A module reachable twice is listed once per slot."""
    slots, visited = [], set()

    def walk(parent: nn.Module, prefix: str):
        if id(parent) in visited:
            return
        visited.add(id(parent))
        for attr, child in parent._modules.items():
            if child is None:
                continue
            name = f"{prefix}.{attr}" if prefix else attr
            if _is_spikingjelly_neuron(child, sj_neuron):
                slots.append((parent, attr, child, name))
            else:
                walk(child, name)

    if _is_spikingjelly_neuron(model, sj_neuron):
        return [(None, None, model, "")]
    walk(model, "")
    return slots


def _state_blocker(module: nn.Module, target: type, memories: set) -> str | None:
    """Why the neuron's state or parameters cannot move to ``target`` unchanged, or None."""
    extra_memories = sorted(set(getattr(module, "_memories", {})) - memories)
    if extra_memories:
        return f"extra state {extra_memories} registered on the neuron would be dropped"
    default_reset_value = 0.0 if module.v_reset is None else module.v_reset
    reset_value = module._memories_rv.get("v")
    if isinstance(reset_value, torch.Tensor) or reset_value != default_reset_value:
        return f"custom reset value v={reset_value!r} (spikeops resets v to {default_reset_value!r})"
    expected_parameters = {"w"} if target is PLIF else set()
    extra_parameters = sorted(set(dict(module.named_parameters())) - expected_parameters)
    extra_buffers = sorted(dict(module.named_buffers()))
    if extra_parameters or extra_buffers:
        return f"extra parameters/buffers {extra_parameters + extra_buffers} would be dropped"
    return None


def _plan(module: nn.Module, sj_neuron, backend: str):
    """(spikeops class, constructor kwargs) for ``module``, or (None, reason)."""
    legacy = sj_neuron.clock_driven
    if legacy is not None and type(module).__module__.startswith(_SJ_LEGACY_NEURON_PACKAGE):
        return _plan_legacy(module, legacy, backend)
    if sj_neuron.activation_based is None:
        return None, "no spikeops equivalent"
    sj_neuron = sj_neuron.activation_based
    exact = {sj_neuron.IFNode: IF, sj_neuron.LIFNode: LIF, sj_neuron.ParametricLIFNode: PLIF}
    for table_kind in NEURON_KINDS:  # the table's neurons, by the SpikingJelly class each stands in for
        sj_class = getattr(sj_neuron, table_kind.spikingjelly or "", None)
        if sj_class is not None:
            exact[sj_class] = getattr(table_neurons, table_kind.name)
    converted = ", ".join(sj_class.__name__ for sj_class in exact)
    kind = type(module)
    if kind not in exact:
        base = next((b.__name__ for b in exact if isinstance(module, b)), None)
        if base is not None:
            return None, (f"subclass of {base} that may change its dynamics; only the exact classes ({converted}) "
                          "are converted")
        return None, f"no spikeops equivalent (spikeops converts {converted})"
    target = exact[kind]
    if getattr(module, "_neuron_precision", None) is not None:
        return None, (f"reduced-precision neuron state set by spikingjelly.activation_based.precision "
                      f"({module._neuron_precision!r}) is not supported")
    blocker = _state_blocker(module, target, {"v"})
    if blocker is not None:
        return None, blocker
    kwargs = dict(v_threshold=module.v_threshold, v_reset=module.v_reset, surrogate_function=module.surrogate_function,
                  detach_reset=module.detach_reset, step_mode=module.step_mode, backend=backend,
                  store_v_seq=module.store_v_seq)
    if target is LIF:
        kwargs.update(tau=module.tau, decay_input=module.decay_input)
    elif target is PLIF:
        kwargs.update(decay_input=module.decay_input)
    elif hasattr(target, "table_kind"):
        kwargs.update({name: getattr(module, name) for name in (*target.table_kind.defaults, "v_rest")})
    try:
        target(**kwargs)  # validates every argument, surrogate included, before anything is changed
    except (ValueError, TypeError) as error:
        return None, f"unsupported option: {error}"
    return target, kwargs


def _plan_legacy(module: nn.Module, legacy, backend: str):
    """The same for a legacy ``spikingjelly.clock_driven`` neuron (SpikingJelly 0.0.0.0.x): the single-step
    IFNode / LIFNode / ParametricLIFNode and their MultiStep* classes. A converted multi-step neuron keeps
    ``v_seq`` as the legacy one did (``store_v_seq=True``)."""
    exact = {}
    for name, target, mode in (("IFNode", IF, "s"), ("LIFNode", LIF, "s"), ("ParametricLIFNode", PLIF, "s"),
                               ("MultiStepIFNode", IF, "m"), ("MultiStepLIFNode", LIF, "m"),
                               ("MultiStepParametricLIFNode", PLIF, "m")):
        if isinstance(getattr(legacy, name, None), type):
            exact[getattr(legacy, name)] = (target, mode)
    kind = type(module)
    if kind not in exact:
        # Most derived first: MultiStepLIFNode is a LIFNode.
        base = next((b.__name__ for b in sorted(exact, key=lambda b: -len(b.__mro__)) if isinstance(module, b)), None)
        if base is not None:
            return None, f"subclass of the legacy {base} that may change its dynamics; only the exact classes are converted"
        return None, ("no spikeops equivalent (spikeops converts the legacy IFNode, LIFNode, ParametricLIFNode and "
                      "their MultiStep* classes)")
    target, mode = exact[kind]
    if getattr(module, "backend", None) not in (None, "torch", "cupy"):
        return None, f"legacy backend={module.backend!r} (it does not run on PyTorch tensors)"
    blocker = _state_blocker(module, target, {"v", "v_threshold", "v_reset", "v_seq"})
    if blocker is not None:
        return None, blocker
    kwargs = dict(v_threshold=module.v_threshold, v_reset=module.v_reset, surrogate_function=module.surrogate_function,
                  detach_reset=module.detach_reset, step_mode=mode, backend=backend, store_v_seq=mode == "m")
    if target is LIF:
        kwargs.update(tau=module.tau, decay_input=module.decay_input)
    elif target is PLIF:
        kwargs.update(decay_input=module.decay_input)
    try:
        target(**kwargs)
    except (ValueError, TypeError) as error:
        return None, f"unsupported option: {error}"
    return target, kwargs


def _build(module: nn.Module, target, kwargs) -> BaseNeuron:
    new = target(**kwargs)
    if target is PLIF:
        # The same Parameter object, so an optimizer built on the original model keeps training it.
        new.w = module.w
    new.train(module.training)
    new.v = module.v
    new.v_seq = getattr(module, "v_seq", None)  # a legacy single-step neuron has none
    # Hooks (monitors, user hooks) follow the neuron; sharing the dicts keeps their removal handles valid.
    for attr, value in vars(module).items():
        if "hooks" in attr and isinstance(value, dict):
            setattr(new, attr, value)
    new._is_full_backward_hook = module._is_full_backward_hook
    return new


def _copy_model(model: nn.Module) -> nn.Module:
    """deepcopy that also copies a mid-sequence state still attached to the autograd graph (deepcopy
    refuses non-leaf tensors); the copy stays on the graph, so gradients reach the earlier steps."""
    memo = {}
    for module in model.modules():
        states = list(vars(module).values()) + list(getattr(module, "_memories", {}).values())
        for value in states:
            if isinstance(value, torch.Tensor) and value.grad_fn is not None:
                memo[id(value)] = value.clone()
    return copy.deepcopy(model, memo)


def _forget_reset_caches(model: nn.Module) -> None:
    """SpikingJelly's reset_net caches the modules to reset per network; drop those caches so
    reset_net reaches the new neurons."""
    try:
        from spikingjelly.activation_based.functional import invalidate_reset_cache
    except ImportError:
        return
    for module in model.modules():
        invalidate_reset_cache(module)


def convert(model: nn.Module, backend: str = "auto", inplace: bool = False, strict: bool = False,
            fuse_batchnorm: bool = True):
    """Replaces SpikingJelly ``IFNode``, ``LIFNode``, ``ParametricLIFNode``, ``QIFNode`` and ``EIFNode`` modules in
    ``model`` with ``spikeops.IF`` / ``LIF`` / ``PLIF`` / ``QIF`` / ``EIF`` running on ``backend``.

    Arguments, step mode, surrogate, PLIF's learnable ``w`` (the same Parameter object), the current
    membrane state ``v`` / ``v_seq``, training mode and registered hooks are carried over, so a model
    converted mid-sequence continues exactly where SpikingJelly stopped. ``inplace=False`` converts a
    deep copy and leaves ``model`` untouched. Returns ``(model, ConversionReport)``; with
    ``strict=True`` a neuron that cannot be converted raises ``ConversionError`` and nothing changes.

    ``fuse_batchnorm=True``: inside an ``nn.Sequential``, a multi-step BatchNorm (``layer.BatchNorm*d`` or a
    ``SeqToANNContainer`` ending in one) directly followed by a converted multi-step neuron runs fused into
    that neuron (spikeops.nn.batchnorm_fusion: the same numbers and running statistics, backward keeps the
    BatchNorm's input only); the report lists each fusion. Parameter names do not change.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    report = ConversionReport()
    sj_neuron = _spikingjelly_neuron_module()
    if sj_neuron is None:  # no SpikingJelly installed, so the model cannot hold its neurons
        return (model if inplace else copy.deepcopy(model)), report

    plans = {}
    for _, _, module, name in _neuron_slots(model, sj_neuron):
        if id(module) not in plans:
            plans[id(module)] = _plan(module, sj_neuron, backend)
        target, detail = plans[id(module)]
        if target is None:
            report.left_alone.append(LeftAloneNeuron(name, type(module).__name__, detail))
        else:
            report.replaced.append(ReplacedNeuron(name, type(module).__name__, target.__name__))
    if strict and report.left_alone:
        raise ConversionError(report)
    if not report.replaced:
        return (model if inplace else _copy_model(model)), report

    if not inplace:
        model = _copy_model(model)
    built = {}
    for parent, attr, module, _ in _neuron_slots(model, sj_neuron):
        if id(module) not in built:
            target, kwargs = _plan(module, sj_neuron, backend)
            built[id(module)] = None if target is None else _build(module, target, kwargs)
        if built[id(module)] is None:
            continue
        if parent is None:
            return enable_spike_packing(built[id(module)]), report
        parent._modules[attr] = built[id(module)]
    _forget_reset_caches(model)
    if fuse_batchnorm:
        report.fused += [FusedBatchNorm(bn, neuron) for bn, neuron in fuse_sequential_batchnorms(model, BaseNeuron)]
    # The replaced neurons' spikes are kept as bits for backward in training (docs/memory.md).
    return (enable_spike_packing(model) if report.replaced else model), report
