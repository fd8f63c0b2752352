"""Operation counts and analytical energy of spiking networks (../shared/SPEC.md §6, Decisions 8-9).

    report = spikeops.energy.profile(model, example_input)
    print(report.table())                # per layer: FLOPs, firing rate, SOPs, AC/MAC; totals; energy
    report.energy(UnifiedEnergy(qann_bits=4))
    report.to_csv("energy.csv"); report.to_dict()

Command line: ``python -m spikeops.energy MODEL_NAME`` (``--list`` shows the names).
Attention modules whose matmuls run in fused kernels report them with an ``energy_ops(inputs, output)``
method returning ``OpCount`` records (``count_matmul`` builds one), or through ``register_module_counter``
/ ``register_op_counter``.
"""
from .counting import OpCount, SpikeStats, count_conv, count_linear, count_matmul, spike_stats
from .energy_models import ConventionalEnergy, EnergyEstimate, UnifiedEnergy
from .profiler import profile, register_module_counter, register_neuron_type, register_op_counter
from .report import EnergyProfile, LayerRecord, NeuronRecord

__all__ = ["profile", "EnergyProfile", "LayerRecord", "NeuronRecord", "EnergyEstimate", "ConventionalEnergy",
           "UnifiedEnergy", "OpCount", "SpikeStats", "spike_stats", "count_matmul", "count_linear", "count_conv",
           "register_neuron_type", "register_module_counter", "register_op_counter"]
