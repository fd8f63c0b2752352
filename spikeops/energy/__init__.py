"""Operation counts and analytical energy of spiking networks (models and choices: docs/energy.md).

    report = spikeops.energy.profile(model, example_input)
    print(report.table())                # per layer: FLOPs, firing rate, SOPs, AC/MAC; totals; energy
    report.energy(UnifiedEnergy(qann_bits=4))
    report.to_csv("energy.csv"); report.to_dict()

Command line: ``python -m spikeops.energy MODEL_NAME`` (``--list`` shows the names).
Work done inside a fused kernel is invisible to the profiler, so it is reported by counters returning
``OpCount`` records (``count_matmul`` builds one). No spikeops module defines an ``energy_ops`` method; the
profiler calls ``energy_ops(inputs, output)`` on any module that has one, ``register_module_counter`` gives
a counter to a module class, ``register_op_counter`` to a ``torch.ops`` operator. spikeops' operator entry
points are observed by name: ``register_counter(op_name, counter)`` (importing this package registers the
counters of the spiking-attention operators, ``attention_counters``).
"""
from . import attention_counters  # noqa: F401  (registers the attention operators' counters)
from .counting import OpCount, SpikeStats, count_conv, count_linear, count_matmul, spike_stats
from .hooks import register_counter
from .energy_models import ConventionalEnergy, EnergyEstimate, UnifiedEnergy
from .profiler import profile, register_module_counter, register_neuron_type, register_op_counter
from .report import EnergyProfile, LayerRecord, NeuronRecord

__all__ = ["profile", "EnergyProfile", "LayerRecord", "NeuronRecord", "EnergyEstimate", "ConventionalEnergy",
           "UnifiedEnergy", "OpCount", "SpikeStats", "spike_stats", "count_matmul", "count_linear", "count_conv",
           "register_neuron_type", "register_module_counter", "register_op_counter", "register_counter"]
