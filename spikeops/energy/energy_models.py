"""Analytical energy models (docs/energy.md). Every constant is a parameter; defaults
are the 45 nm figures (Horowitz: E_MAC 4.6 pJ, E_AC 0.9 pJ for 32-bit float) and STEP's E_Mem 3.12 pJ.

All figures are per sample, in picojoules, computed from an ``EnergyProfile``:

conventional (STEP's re-examined baseline, QKFormer appendix 6.6):
    SNN  = E_AC * sum(SOPs of spike-driven layers) + E_MAC * sum(MAC ops of real-valued-input layers)
    ANN  = E_MAC * sum(FLOPs)
unified (STEP's model with bit width and memory access; our reading, see docs/energy.md):
    SNN  = conventional SNN compute
           + E_Mem * (weights read per pass * passes * snn_weight_bits / word_bits     (weights, every step)
                      + 2 * neurons * T * membrane_bits / word_bits)                   (membrane read + write)
    ANN  = E_MAC * FLOPs + E_Mem * weights * ann_bits / word_bits
    QANN = E_AC * (1 - qann_bit_sparsity) * qann_bits * FLOPs     (bit-serial: a B-bit MAC is B ACs, zero bits skipped)
           + E_Mem * weights * qann_bits / word_bits
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

__all__ = ["EnergyEstimate", "ConventionalEnergy", "UnifiedEnergy"]

PJ_PER_MJ = 1e9


@dataclass(frozen=True)
class EnergyEstimate:
    model: str      # "conventional" or "unified"
    network: str    # "SNN", "ANN" or "QANN-<bits>b"
    compute_pj: float
    memory_pj: float

    @property
    def total_pj(self) -> float:
        return self.compute_pj + self.memory_pj

    @property
    def total_mj(self) -> float:
        return self.total_pj / PJ_PER_MJ


def _check_fields(obj, positive_ints=(), fractions=()) -> None:
    for f in fields(obj):
        value = getattr(obj, f.name)
        if f.name in positive_ints:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{f.name}: expected a positive int, got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{f.name}: expected a finite number >= 0, got {value!r}")
        elif f.name in fractions and value > 1:
            raise ValueError(f"{f.name}: expected a fraction in [0, 1], got {value!r}")


def _snn_compute_pj(profile, e_ac_pj: float, e_mac_pj: float) -> float:
    return e_ac_pj * profile.sops + e_mac_pj * profile.mac_ops


@dataclass(frozen=True)
class ConventionalEnergy:
    e_ac_pj: float = 0.9
    e_mac_pj: float = 4.6

    def __post_init__(self):
        _check_fields(self)

    def estimate(self, profile) -> list[EnergyEstimate]:
        return [EnergyEstimate("conventional", "SNN", _snn_compute_pj(profile, self.e_ac_pj, self.e_mac_pj), 0.0),
                EnergyEstimate("conventional", "ANN", self.e_mac_pj * profile.flops, 0.0)]


@dataclass(frozen=True)
class UnifiedEnergy:
    e_ac_pj: float = 0.9
    e_mac_pj: float = 4.6
    e_mem_pj: float = 3.12         # one memory access of a word_bits-wide word
    word_bits: int = 32
    snn_weight_bits: int = 32
    membrane_bits: int = 32
    ann_bits: int = 32
    qann_bits: int = 8
    qann_bit_sparsity: float = 0.5  # fraction of zero activation bits a bit-serial QANN skips [assume]

    def __post_init__(self):
        _check_fields(self, positive_ints=("word_bits", "snn_weight_bits", "membrane_bits", "ann_bits", "qann_bits"),
                      fractions=("qann_bit_sparsity",))

    def _words(self, values: float, bits: int) -> float:
        return values * bits / self.word_bits

    def estimate(self, profile) -> list[EnergyEstimate]:
        snn_memory = self._words(profile.snn_weight_reads, self.snn_weight_bits) + \
            self._words(profile.membrane_accesses, self.membrane_bits)
        qann_compute = self.e_ac_pj * (1.0 - self.qann_bit_sparsity) * self.qann_bits * profile.flops
        return [
            EnergyEstimate("unified", "SNN", _snn_compute_pj(profile, self.e_ac_pj, self.e_mac_pj),
                           self.e_mem_pj * snn_memory),
            EnergyEstimate("unified", "ANN", self.e_mac_pj * profile.flops,
                           self.e_mem_pj * self._words(profile.params, self.ann_bits)),
            EnergyEstimate("unified", f"QANN-{self.qann_bits}b", qann_compute,
                           self.e_mem_pj * self._words(profile.params, self.qann_bits)),
        ]
