"""Functional forms of the spikeops neurons. Every function takes time-major input [T, *] and
returns (spikes, v_last-or-None, v_seq-or-None); see spikeops.neurons for the stateful modules.

``store_v_seq=True`` returns the membrane after every step; ``store_v_last=False`` returns None for the final
membrane, which the kernels then neither allocate nor write (a caller that keeps only the spikes saves that
traffic). Neither changes the spikes or any gradient."""
from __future__ import annotations

import torch

from .ops.neuron.config import config_from_surrogate
from .ops.neuron.op import check_input, neuron_multi_step

__all__ = ["lif", "if_", "plif"]

_config = config_from_surrogate  # the former private helper, kept for old imports


def lif(x: torch.Tensor, v0=None, *, tau: float = 2.0, decay_input: bool = True, v_threshold: float = 1.0,
        v_reset: float | None = 0.0, detach_reset: bool = False, surrogate_function=None,
        backend: str = "auto", store_v_seq: bool = False, store_v_last: bool = True):
    """Multi-step leaky integrate-and-fire, SpikingJelly's LIFNode semantics (``v_reset=None``: soft reset)."""
    cfg = config_from_surrogate(surrogate_function, tau=tau, decay_input=decay_input, v_threshold=v_threshold,
                                v_reset=v_reset, detach_reset=detach_reset)
    return neuron_multi_step(x, v0, cfg=cfg, backend=backend, store_v_seq=store_v_seq,
                             store_v_last=store_v_last)


def if_(x: torch.Tensor, v0=None, *, v_threshold: float = 1.0, v_reset: float | None = 0.0,
        detach_reset: bool = False, surrogate_function=None, backend: str = "auto", store_v_seq: bool = False,
        store_v_last: bool = True):
    """Multi-step integrate-and-fire (no leak), SpikingJelly's IFNode semantics."""
    cfg = config_from_surrogate(surrogate_function, tau=None, decay_input=True, v_threshold=v_threshold,
                                v_reset=v_reset, detach_reset=detach_reset)
    return neuron_multi_step(x, v0, cfg=cfg, backend=backend, store_v_seq=store_v_seq,
                             store_v_last=store_v_last)


def plif(x: torch.Tensor, w: torch.Tensor, v0=None, *, decay_input: bool = True, v_threshold: float = 1.0,
         v_reset: float | None = 0.0, detach_reset: bool = False, surrogate_function=None,
         backend: str = "auto", store_v_seq: bool = False, store_v_last: bool = True):
    """Multi-step parametric LIF: 1/tau = sigmoid(w) with ``w`` learnable (SpikingJelly's ParametricLIFNode)."""
    cfg = config_from_surrogate(surrogate_function, tau=None, learnable_tau=True, decay_input=decay_input,
                                v_threshold=v_threshold, v_reset=v_reset, detach_reset=detach_reset)
    check_input(w, "w")  # named here: past the sigmoid, a bad w would be reported as `leak`
    if w.numel() != 1:
        raise ValueError(f"w: expected a one-element tensor (PLIF's learnable tau), got shape {tuple(w.shape)}")
    return neuron_multi_step(x, v0, cfg=cfg, leak=torch.sigmoid(w), backend=backend, store_v_seq=store_v_seq,
                             store_v_last=store_v_last)
