"""The result of ``profile``: per-layer and per-neuron records, totals, energy, table and exports."""
from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass, fields

from .energy_models import ConventionalEnergy, EnergyEstimate, UnifiedEnergy

__all__ = ["LayerRecord", "NeuronRecord", "EnergyProfile"]


@dataclass(frozen=True)
class LayerRecord:
    """One compute op of the model (a conv, a linear, one matmul of an attention), per sample.

    flops: dense multiply-accumulates per time step (the ANN counterpart's count).
    time_steps: time steps the op ran over in the forward (T, or 1 for an op after a time average).
    firing_rate: events per input element of the driving operand (integer count for multi-bit spikes);
        None for a MAC op. sops = firing_rate * time_steps * flops.
    mac_ops: multiply-accumulates a MAC op performs (input repeated over time is computed once).
    params: weights the op reads per pass; weight_passes: passes the SNN makes over them.
    """
    name: str
    kind: str
    flops: float
    time_steps: int
    firing_rate: float | None
    spike_driven: bool
    sops: float
    mac_ops: float
    params: int
    weight_passes: int

    @property
    def op_type(self) -> str:
        return "AC" if self.spike_driven else "MAC"


@dataclass(frozen=True)
class NeuronRecord:
    """One spiking-neuron module: neurons per time step, spikes emitted per sample, firing rate
    (spikes / (neurons * time steps)), and whether every output was spike-valued."""
    name: str
    kind: str
    neurons: float
    time_steps: int
    spikes: float
    firing_rate: float
    spike_valued: bool


def _default_models():
    return (ConventionalEnergy(), UnifiedEnergy())


@dataclass(frozen=True)
class EnergyProfile:
    layers: list
    neurons: list
    time_steps: int
    batch_size: int

    @property
    def flops(self) -> float:
        """Dense MACs of the ANN counterpart (one pass)."""
        return sum(layer.flops for layer in self.layers)

    @property
    def sops(self) -> float:
        return sum(layer.sops for layer in self.layers)

    @property
    def mac_ops(self) -> float:
        return sum(layer.mac_ops for layer in self.layers)

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)

    @property
    def snn_weight_reads(self) -> float:
        return float(sum(layer.params * layer.weight_passes for layer in self.layers))

    @property
    def neuron_count(self) -> float:
        return sum(n.neurons for n in self.neurons)

    @property
    def membrane_accesses(self) -> float:
        """One read and one write of every membrane potential at every time step."""
        return sum(2.0 * n.neurons * n.time_steps for n in self.neurons)

    @property
    def firing_rate(self) -> float:
        """All spikes over all neuron slots (STEP's network-wide rate)."""
        slots = sum(n.neurons * n.time_steps for n in self.neurons)
        return sum(n.spikes for n in self.neurons) / slots if slots else 0.0

    def energy(self, *energy_models) -> list[EnergyEstimate]:
        """Estimates under the given models (default: conventional and unified with their defaults)."""
        return [e for m in (energy_models or _default_models()) for e in m.estimate(self)]

    def totals(self) -> dict:
        return {"flops": self.flops, "sops": self.sops, "mac_ops": self.mac_ops, "params": self.params,
                "snn_weight_reads": self.snn_weight_reads, "neurons": self.neuron_count,
                "membrane_accesses": self.membrane_accesses, "firing_rate": self.firing_rate}

    def to_dict(self, *energy_models) -> dict:
        """Plain, JSON-serialisable dict."""
        return {"time_steps": self.time_steps, "batch_size": self.batch_size,
                "layers": [dict(asdict(layer), op_type=layer.op_type) for layer in self.layers],
                "neurons": [asdict(n) for n in self.neurons],
                "totals": self.totals(),
                "energy": [dict(asdict(e), total_pj=e.total_pj) for e in self.energy(*energy_models)]}

    def to_csv(self, path=None) -> str:
        """One row per layer; returns the text and writes it to ``path`` when given."""
        out = io.StringIO()
        columns = [f.name for f in fields(LayerRecord)] + ["op_type"]
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for layer in self.layers:
            writer.writerow(dict(asdict(layer), op_type=layer.op_type))
        text = out.getvalue()
        if path is not None:
            with open(path, "w", newline="") as f:
                f.write(text)
        return text

    def table(self, *energy_models) -> str:
        width = max([len("layer")] + [len(layer.name) for layer in self.layers])
        head = (f"{'layer':<{width}}  {'kind':<7} {'type':<4} {'FLOPs(M)':>10} {'T':>3} {'rate':>7} "
                f"{'SOPs(M)':>10} {'MACs(M)':>10} {'params(K)':>10}")
        lines = [head, "-" * len(head)]
        for layer in self.layers:
            rate = f"{layer.firing_rate:7.4f}" if layer.firing_rate is not None else f"{'-':>7}"
            lines.append(f"{layer.name:<{width}}  {layer.kind:<7} {layer.op_type:<4} {layer.flops / 1e6:10.3f} "
                         f"{layer.time_steps:>3} {rate} {layer.sops / 1e6:10.3f} {layer.mac_ops / 1e6:10.3f} "
                         f"{layer.params / 1e3:10.1f}")
        lines.append("-" * len(head))
        lines.append(f"{'total':<{width}}  {'':<7} {'':<4} {self.flops / 1e6:10.3f} {self.time_steps:>3} "
                     f"{'':>7} {self.sops / 1e6:10.3f} {self.mac_ops / 1e6:10.3f} {self.params / 1e3:10.1f}")
        lines.append(f"per sample; T = {self.time_steps}; {len(self.neurons)} neuron layers, "
                     f"{self.neuron_count / 1e3:.1f} K neurons, mean firing rate {self.firing_rate:.4f}")
        lines.append("")
        lines.append(f"{'energy per sample':<26} {'compute(mJ)':>12} {'memory(mJ)':>12} {'total(mJ)':>12}")
        for e in self.energy(*energy_models):
            lines.append(f"{e.model + ' ' + e.network:<26} {e.compute_pj / 1e9:12.5f} {e.memory_pj / 1e9:12.5f} "
                         f"{e.total_mj:12.5f}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()
