"""Spiking Transformer with Experts Mixture blocks (SEMM, SPEC §4, after STEP's port): EMSA replaces
SSA, EMSP replaces the MLP. Layout [T, B, C, H, W] like spikeops.attention; the port's Linear layers
are the equivalent 1x1 convolutions on [T*B, C, N]. All neurons are LIF with tau 2, θ 1 and a
detached hard reset (the port's values); sigmoid surrogate α 4.
"""
from __future__ import annotations

import torch
from torch import nn

from .attention_bipolar import SpikingBlock, check_block_input, check_finite, lif
from .ops.experts_mixture.op import experts_mixture

__all__ = ["EMSA", "EMSP"]


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return value


class EMSA(SpikingBlock):
    """Experts-mixture spiking attention, x [T, B, C, H, W] -> spikes [T, B, C, H, W]:
    K = SN(BN(Lin(x))) [.., d_e], V = SN(BN(Lin(x))) [.., C], router R = SN(BN(Lin_R(x))) [.., m],
    per expert Q_i = SN(BN(Lin_i(x))) [.., d_e] and A_i = SN((Q_i K^T) V * scale),
    Y = sum_i R_i * A_i (fused, skipping zero router spikes), out = SN(BN(Lin(Y))).
    Port defaults: m = 4 experts, d_e = 96, scale = 0.125."""

    def __init__(self, dim: int, num_experts: int = 4, expert_dim: int = 96, scale: float = 0.125,
                 backend: str = "auto"):
        super().__init__()
        self.dim = _positive_int("dim", dim)
        self.num_experts = _positive_int("num_experts", num_experts)
        self.expert_dim = _positive_int("expert_dim", expert_dim)
        check_finite("scale", scale)
        self.scale, self.backend = scale, backend
        widths = {"q": num_experts * expert_dim, "k": expert_dim, "v": dim, "router": num_experts}
        for name, width in widths.items():
            setattr(self, f"{name}_conv", nn.Conv1d(dim, width, kernel_size=1, bias=False))
            setattr(self, f"{name}_bn", nn.BatchNorm1d(width))
            setattr(self, f"{name}_lif", lif(backend))
        self.expert_lif = lif(backend)
        self.proj_conv = nn.Conv1d(dim, dim, kernel_size=1)
        self.proj_bn = nn.BatchNorm1d(dim)
        self.proj_lif = lif(backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_block_input(x, self.dim)
        T, B, C, H, W = x.shape
        N, m, de = H * W, self.num_experts, self.expert_dim
        x = x.flatten(3)
        q = self.conv_bn_neuron("q", x).reshape(T, B, m, de, N).transpose(-1, -2)    # [T, B, m, N, d_e]
        k = self.conv_bn_neuron("k", x).transpose(-1, -2).unsqueeze(2)               # [T, B, 1, N, d_e]
        v = self.conv_bn_neuron("v", x).transpose(-1, -2).unsqueeze(2)               # [T, B, 1, N, C]
        router = self.conv_bn_neuron("router", x).transpose(-1, -2)                  # [T, B, N, m]
        # (Q_i K^T) V evaluated as Q_i (K^T V): identical, and K^T V is shared by the experts.
        experts = self.expert_lif((q @ (k.transpose(-1, -2) @ v)) * self.scale)       # [T, B, m, N, C]
        y = experts_mixture(router.contiguous(), experts.permute(0, 1, 3, 2, 4), backend=self.backend)
        return self.conv_bn_neuron("proj", y.transpose(-1, -2)).reshape(T, B, C, H, W)

    def extra_repr(self):
        return (f"dim={self.dim}, num_experts={self.num_experts}, expert_dim={self.expert_dim}, scale={self.scale}, "
                f"backend={self.backend}")


class EMSP(SpikingBlock):
    """Experts-mixture spiking MLP, x [T, B, C, H, W] -> spikes [T, B, C, H, W]:
    Z = SN(BN(Lin(x))) of width ``hidden_dim``, split into halves Z1, Z2; the channel-wise router
    G = SN(BN(DWConv3x3(Z1))); out = SN(BN(Lin(G * Z2))). Port: hidden_dim = 4C (CIFAR)."""

    def __init__(self, dim: int, hidden_dim: int | None = None, backend: str = "auto"):
        super().__init__()
        self.dim = _positive_int("dim", dim)
        hidden_dim = 4 * dim if hidden_dim is None else _positive_int("hidden_dim", hidden_dim)
        if hidden_dim % 2:
            raise ValueError(f"hidden_dim: must be even (it is split into two halves), got {hidden_dim}")
        self.hidden_dim, self.backend = hidden_dim, backend
        half = hidden_dim // 2
        self.fc1_conv = nn.Conv2d(dim, hidden_dim, kernel_size=1)
        self.fc1_bn = nn.BatchNorm2d(hidden_dim)
        self.fc1_lif = lif(backend)
        self.gate_conv = nn.Conv2d(half, half, kernel_size=3, padding=1, groups=half)
        self.gate_bn = nn.BatchNorm2d(half)
        self.gate_lif = lif(backend)
        self.fc2_conv = nn.Conv2d(half, dim, kernel_size=1)
        self.fc2_bn = nn.BatchNorm2d(dim)
        self.fc2_lif = lif(backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_block_input(x, self.dim)
        z_router, z_value = self.conv_bn_neuron("fc1", x).chunk(2, dim=2)
        gate = self.conv_bn_neuron("gate", z_router)
        return self.conv_bn_neuron("fc2", gate * z_value)

    def extra_repr(self):
        return f"dim={self.dim}, hidden_dim={self.hidden_dim}, backend={self.backend}"
