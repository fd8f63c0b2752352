"""Pure-PyTorch reference of the spiking experts mixture (SEMM; docs/attention.md): the oracle
every fused backend is tested against.

Router spikes gate the per-expert spiking attention outputs, which are summed; there is no softmax
and no top-k, sparsity comes from the router's zeros:

    Y[..., c] = sum_i R[..., i] * A_i[..., c]

with router spikes R [..., m] and expert outputs A [..., m, C]. This form materialises every
gated product R_i * A_i; the fused kernels skip an expert's row wherever its router spike is zero.
"""
from __future__ import annotations

import torch


def experts_mixture(router_spikes: torch.Tensor, expert_outputs: torch.Tensor) -> torch.Tensor:
    compute = torch.float32 if expert_outputs.dtype in (torch.float16, torch.bfloat16) else expert_outputs.dtype
    gated = router_spikes.to(compute).unsqueeze(-1) * expert_outputs.to(compute)
    return gated.sum(dim=-2).to(expert_outputs.dtype)
