"""Neuron modules running on the fused kernels.

* ``BaseNeuron``, ``LIF``, ``IF``, ``PLIF``: stateful, with SpikingJelly's arguments, defaults and state
  handling (``v``, ``v_seq``, ``reset()``, ``step_mode``).
* ``LIFNeuron``: the backbones' stateless LIF (every forward starts from rest, returns spikes only).
* ``official_lif``: the one factory of the official models' LIF (tau 2, threshold 1, detached hard reset
  to 0, Sigmoid(alpha=4) surrogate), stateful or stateless.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .. import functional
from ..backends import BACKENDS
from ..ops.neuron.config import config_from_surrogate as _config
from ..ops.batchnorm_neuron import batchnorm_neuron, pooled_shape
from ..ops.neuron.op import neuron_multi_step
from ..surrogate import resolve_surrogate

__all__ = ["BaseNeuron", "LIF", "IF", "PLIF", "LIFNeuron", "official_lif", "check_backend", "LIF_TAU"]


class BaseNeuron(nn.Module):
    """Shared state handling. Subclasses provide ``_neuron_config()`` and optionally ``_leak()``.

    ``forward(x, batchnorm=...)`` runs ``BatchNorm -> neuron`` fused (spikeops.nn.batchnorm_fusion passes
    the BatchNorm's arguments): x is then the BatchNorm's input."""

    fuses_batchnorm = True
    state_names = ("v", "v_seq")  # what a call leaves for the next (spikeops.nn.checkpointing restores it)

    def __init__(self, v_threshold: float = 1.0, v_reset: float | None = 0.0, surrogate_function=None,
                 detach_reset: bool = False, step_mode: str = "s", backend: str = "auto", store_v_seq: bool = False):
        super().__init__()
        if step_mode not in ("s", "m"):
            raise ValueError(f"step_mode: expected 's' (single step) or 'm' (multi step), got {step_mode!r}")
        self.v_threshold = v_threshold
        self.v_reset = v_reset
        self.surrogate_function = resolve_surrogate(surrogate_function)
        self.detach_reset = detach_reset
        self.step_mode = step_mode
        self.backend = check_backend(backend)  # checked now (and again per call: it may be switched later)
        self.store_v_seq = store_v_seq
        self._neuron_config()  # validate the hyper-parameters now rather than at the first forward
        self.reset()

    def reset(self):
        """Back to the resting state (SpikingJelly's MemoryModule.reset)."""
        self.v = 0.0 if self.v_reset is None else self.v_reset
        self.v_seq = None

    def detach(self):
        """Cuts the state from the autograd graph, keeping its value (SpikingJelly's MemoryModule.detach,
        called by ``functional.detach_net`` for truncated BPTT)."""
        if isinstance(self.v, torch.Tensor):
            self.v = self.v.detach()
        if isinstance(self.v_seq, torch.Tensor):
            self.v_seq = self.v_seq.detach()

    def _apply(self, fn, recurse=True):
        # .to()/.cuda()/.half() move the membrane state with the module, as SpikingJelly's memories do.
        if isinstance(self.v, torch.Tensor):
            self.v = fn(self.v)
        if isinstance(self.v_seq, torch.Tensor):
            self.v_seq = fn(self.v_seq)
        return super()._apply(fn, recurse)

    def _leak(self):
        return None

    def _neuron_config(self):
        raise NotImplementedError

    def _resting(self) -> float:
        return 0.0 if self.v_reset is None else self.v_reset

    def _match_state(self, x: torch.Tensor) -> None:
        """SpikingJelly 2.0 (BaseNode.materialize_states): a membrane whose shape differs from one step of the
        input (a new batch size or spatial size without ``reset()``) restarts from rest, v_reset (0 for a soft
        reset); the recorded single-step ``v_seq`` restarts when the shape, device or dtype changes."""
        if isinstance(x, torch.Tensor) and isinstance(self.v, torch.Tensor) and self.v.shape != x.shape[1:]:
            self.v = self._resting()

    def _run(self, x_seq: torch.Tensor, batchnorm: dict | None = None) -> torch.Tensor:
        pooled = batchnorm is not None and batchnorm.get("pool") is not None
        # a fused max-pool gives the membrane the pooled shape: a one-element stand-in of that shape
        self._match_state(x_seq.new_empty(()).expand(pooled_shape(x_seq, batchnorm["pool"])) if pooled else x_seq)
        if batchnorm is None:
            spikes, v_last, v_seq = neuron_multi_step(x_seq, self.v, cfg=self._neuron_config(), leak=self._leak(),
                                                      backend=self.backend, store_v_seq=self.store_v_seq)
        else:
            spikes, v_last, v_seq = batchnorm_neuron(x_seq, self.v, cfg=self._neuron_config(), leak=self._leak(),
                                                     backend=self.backend, store_v_seq=self.store_v_seq, **batchnorm)
        self.v = v_last
        return spikes, v_seq

    def single_step_forward(self, x: torch.Tensor, batchnorm: dict | None = None) -> torch.Tensor:
        spikes, v_seq = self._run(x.unsqueeze(0), batchnorm)
        if self.store_v_seq:
            previous = self.v_seq
            restart = (previous is None or previous.shape[1:] != v_seq.shape[1:] or previous.device != v_seq.device
                       or previous.dtype != v_seq.dtype)
            self.v_seq = v_seq if restart else torch.cat([previous, v_seq])
        return spikes[0]

    def multi_step_forward(self, x_seq: torch.Tensor, batchnorm: dict | None = None) -> torch.Tensor:
        spikes, v_seq = self._run(x_seq, batchnorm)
        if self.store_v_seq:
            self.v_seq = v_seq
        return spikes

    def forward(self, x: torch.Tensor, batchnorm: dict | None = None) -> torch.Tensor:
        if self.step_mode == "m":
            return self.multi_step_forward(x, batchnorm)
        if self.step_mode == "s":
            return self.single_step_forward(x, batchnorm)
        raise ValueError(f"step_mode: expected 's' or 'm', got {self.step_mode!r}")

    def extra_repr(self):
        return (f"v_threshold={self.v_threshold}, v_reset={self.v_reset}, detach_reset={self.detach_reset}, "
                f"step_mode={self.step_mode}, backend={self.backend}, surrogate_function={self.surrogate_function}")


class LIF(BaseNeuron):
    """Drop-in for SpikingJelly's ``LIFNode``: same arguments, same defaults, same numbers."""

    def __init__(self, tau: float = 2.0, decay_input: bool = True, v_threshold: float = 1.0,
                 v_reset: float | None = 0.0, surrogate_function=None, detach_reset: bool = False,
                 step_mode: str = "s", backend: str = "auto", store_v_seq: bool = False):
        self.tau = tau
        self.decay_input = decay_input
        super().__init__(v_threshold, v_reset, surrogate_function, detach_reset, step_mode, backend, store_v_seq)

    def _neuron_config(self):
        s = self.surrogate_function
        return _config(s, tau=self.tau, decay_input=self.decay_input, v_threshold=self.v_threshold,
                       v_reset=self.v_reset, detach_reset=self.detach_reset)

    def extra_repr(self):
        return f"tau={self.tau}, decay_input={self.decay_input}, " + super().extra_repr()


class IF(BaseNeuron):
    """Drop-in for SpikingJelly's ``IFNode``."""

    def _neuron_config(self):
        return _config(self.surrogate_function, tau=None, decay_input=True, v_threshold=self.v_threshold,
                       v_reset=self.v_reset, detach_reset=self.detach_reset)


class PLIF(BaseNeuron):
    """Drop-in for SpikingJelly's ``ParametricLIFNode``: 1/tau = sigmoid(w), w learnable,
    initialised to -log(init_tau - 1)."""

    def __init__(self, init_tau: float = 2.0, decay_input: bool = True, v_threshold: float = 1.0,
                 v_reset: float | None = 0.0, surrogate_function=None, detach_reset: bool = False,
                 step_mode: str = "s", backend: str = "auto", store_v_seq: bool = False):
        if isinstance(init_tau, bool) or not isinstance(init_tau, (int, float)) or not 1.0 < init_tau < math.inf:
            raise ValueError(f"init_tau: must be a finite number > 1, got {init_tau!r}")
        self.decay_input = decay_input
        super().__init__(v_threshold, v_reset, surrogate_function, detach_reset, step_mode, backend, store_v_seq)
        self.w = nn.Parameter(torch.as_tensor(-math.log(init_tau - 1.0)))

    @property
    def tau(self) -> float:
        return float(1.0 / torch.sigmoid(self.w.detach()))

    def _leak(self):
        return torch.sigmoid(self.w)

    def _neuron_config(self):
        return _config(self.surrogate_function, tau=None, learnable_tau=True, decay_input=self.decay_input,
                       v_threshold=self.v_threshold, v_reset=self.v_reset, detach_reset=self.detach_reset)


# ---------------------------------------------------------------- the official models' LIF
# SpikingJelly MultiStepLIFNode(tau=2.0, detach_reset=True) with the default Sigmoid(alpha=4) surrogate and
# hard reset to 0, as every official spiking-transformer code base uses it.
LIF_TAU = 2.0


def check_backend(backend: str) -> str:
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    return backend


class LIFNeuron(nn.Module):
    """Stateless multi-step LIF over the leading dimension of its input, which it treats as time: each
    forward starts from v = 0 and returns spikes only, so a model needs no ``reset_net`` between batches
    and works unchanged under DDP and ``torch.compile``."""

    def __init__(self, v_threshold: float = 1.0, backend: str = "auto"):
        super().__init__()
        self.v_threshold = v_threshold
        self.backend = check_backend(backend)

    # forward takes batchnorm=: the arguments of a BatchNorm to fuse in front (spikeops.nn.batchnorm_fusion)
    fuses_batchnorm = True

    def forward(self, x: torch.Tensor, batchnorm: dict | None = None) -> torch.Tensor:
        # No state to carry: the final membrane is not stored, which saves the kernels writing it.
        if batchnorm is not None:
            cfg = _config(None, tau=LIF_TAU, v_threshold=self.v_threshold, v_reset=0.0, detach_reset=True)
            spikes, _, _ = batchnorm_neuron(x, None, cfg=cfg, backend=self.backend, store_v_last=False, **batchnorm)
            return spikes
        spikes, _, _ = functional.lif(x, tau=LIF_TAU, v_threshold=self.v_threshold, detach_reset=True,
                                      backend=self.backend, store_v_last=False)
        return spikes

    def extra_repr(self) -> str:
        return f"v_threshold={self.v_threshold}, backend={self.backend}"


def official_lif(backend: str = "auto", v_threshold: float = 1.0, *, stateless: bool = False) -> nn.Module:
    """The official models' LIF (tau 2, detached hard reset to 0, Sigmoid(alpha=4)), multi-step.

    ``stateless=False``: a ``LIF`` whose membrane persists across calls until ``reset()`` (SpikingJelly's
    behaviour); ``stateless=True``: a ``LIFNeuron`` that starts from rest at every call."""
    if stateless:
        return LIFNeuron(v_threshold=v_threshold, backend=backend)
    return LIF(tau=LIF_TAU, v_threshold=v_threshold, detach_reset=True, step_mode="m", backend=backend)
