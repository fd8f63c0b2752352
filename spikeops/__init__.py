"""spikeops: fused multi-step spiking-neuron and spiking-attention operators for PyTorch.

Every operator runs on four backends behind one API: "torch" (pure-PyTorch reference), "cpu"
(fused C++), "cuda" (CUDA C++) and "triton"; "auto" picks the fastest available one.
"""
from . import _kernel_package

_kernel_package.attach()
from . import backends, functional, surrogate  # noqa: E402
from .backends import available_backends
from .neurons import IF, LIF, PLIF, BaseNeuron

__all__ = ["LIF", "IF", "PLIF", "BaseNeuron", "functional", "surrogate", "backends", "available_backends"]
# The neuron table's kinds (QIF, EIF, ...), one module class each.
from .nn import table_neurons  # noqa: E402
from .nn.table_neurons import *  # noqa: E402,F401,F403

__all__ += [name for name in table_neurons.__all__ if name != "table_neuron"]
from . import multibit  # noqa: E402
from .multibit import MPRF, BipolarLIF, IELIF, Multispike, collapse_to_integer, expand_to_binary, fold_mprf  # noqa: E402

__all__ += ["multibit", "IELIF", "BipolarLIF", "Multispike", "MPRF", "expand_to_binary", "collapse_to_integer",
            "fold_mprf"]
from . import ops  # noqa: E402
from .ops import attention as _attention_ops  # noqa: E402,F401  (registers spikeops.ops.attention)
from .attention import ChannelQKAttention, SpikeDrivenSelfAttention, SpikingSelfAttention, TokenQKAttention  # noqa: E402

__all__ += ["TokenQKAttention", "ChannelQKAttention", "SpikingSelfAttention", "SpikeDrivenSelfAttention"]
from .convert import ConversionError, ConversionReport, convert  # noqa: E402

__all__ += ["convert", "ConversionReport", "ConversionError"]
from .ops.bipolar_attention.op import bipolar_attention, shiftmax_attention  # noqa: E402
from .ops.experts_mixture.op import experts_mixture  # noqa: E402
from .attention_bipolar import BipolarSelfAttention  # noqa: E402
from .attention_experts import EMSA, EMSP  # noqa: E402

__all__ += ["bipolar_attention", "shiftmax_attention", "experts_mixture", "BipolarSelfAttention", "EMSA", "EMSP"]
# Spikes kept as bits for backward (docs/memory.md).
from .nn.packing import PackSpikes, disable_spike_packing, enable_spike_packing, use_spike_max_pool  # noqa: E402
from .ops.spike_pack import pack_spikes  # noqa: E402

__all__ += ["pack_spikes", "enable_spike_packing", "disable_spike_packing", "PackSpikes", "use_spike_max_pool"]
__version__ = "0.1.0"
from .nn.checkpointing import full_memory, minimum_memory  # noqa: E402

__all__ += ["minimum_memory", "full_memory"]
