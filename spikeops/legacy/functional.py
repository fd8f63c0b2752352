"""``spikingjelly.clock_driven.functional``: ``reset_net`` (legacy semantics: every module with a ``reset()``
is reset, spikeops and SpikingJelly neurons alike), ``set_step_mode``, ``detach_net``,
``multi_step_forward``, ``seq_to_ann_forward``. Any other legacy helper (``first_spike_index``,
``redundant_one_hot``, ``temporal_efficient_training_cross_entropy``, ``fuse_convbn2d``, ...) is taken from
SpikingJelly 2.0's ``spikingjelly.activation_based.functional`` when it has it."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["reset_net", "set_step_mode", "detach_net", "multi_step_forward", "seq_to_ann_forward"]


def reset_net(net: nn.Module) -> None:
    """Calls ``reset()`` on every module of ``net`` that has one (the legacy ``reset_net``)."""
    for module in net.modules():
        if hasattr(module, "reset"):
            module.reset()


def set_step_mode(net: nn.Module, step_mode: str) -> None:
    """Sets ``step_mode`` ('s' or 'm') on every module of ``net`` that has one (SpikingJelly 2.0 semantics; the
    legacy package had fixed single-/multi-step classes instead)."""
    if step_mode not in ("s", "m"):
        raise ValueError(f"step_mode: expected 's' or 'm', got {step_mode!r}")
    for module in net.modules():
        if hasattr(module, "step_mode"):
            module.step_mode = step_mode


def detach_net(net: nn.Module) -> None:
    """Cuts every module's state from the autograd graph (truncated BPTT)."""
    for module in net.modules():
        if hasattr(module, "detach") and not isinstance(module, torch.Tensor):
            try:
                module.detach()
            except TypeError:
                pass


def multi_step_forward(x_seq: torch.Tensor, single_step_module) -> torch.Tensor:
    """Applies ``single_step_module`` (a module or a list/tuple/Sequential of them) to each x_seq[t]."""
    outputs = []
    modules = single_step_module if isinstance(single_step_module, (list, tuple, nn.Sequential)) else [single_step_module]
    for t in range(x_seq.shape[0]):
        y = x_seq[t]
        for module in modules:
            y = module(y)
        outputs.append(y.unsqueeze(0))
    return torch.cat(outputs, 0)


def seq_to_ann_forward(x_seq: torch.Tensor, stateless_module) -> torch.Tensor:
    """Runs ``stateless_module`` once on x_seq [T, B, ...] flattened to [T*B, ...]; returns [T, B, ...]."""
    y_shape = [x_seq.shape[0], x_seq.shape[1]]
    y = x_seq.flatten(0, 1)
    modules = stateless_module if isinstance(stateless_module, (list, tuple, nn.Sequential)) else [stateless_module]
    for module in modules:
        y = module(y)
    return y.view(y_shape + list(y.shape[1:]))


def __getattr__(name: str):
    if not name.startswith("__"):
        try:
            from spikingjelly.activation_based import functional as _sj2
        except ImportError:
            _sj2 = None
        if _sj2 is not None and hasattr(_sj2, name):
            return getattr(_sj2, name)
    raise AttributeError(f"spikingjelly.clock_driven.functional.{name} is provided neither by spikeops.legacy nor by "
                         "the installed spikingjelly.activation_based.functional")
