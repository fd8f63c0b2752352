"""Pure-PyTorch reference of bipolar self-attention (docs/attention.md): the oracle every fused
backend is tested against. Written for reading, with the whole [N, N] score matrix in memory.

The reading implemented here (no official code exists; every constant is an argument):

* Q and K are ternary spikes {-1, 0, +1} from a bipolar neuron; the score is the ternary matrix
  product ``A = scale * Q K^T`` (integers in [-d, d] when scale = 1).
* ``norm="shiftmax"``: with the row maximum ``m_i = max_j A_ij``

      N_ij = 2^(A_ij - m_i),  Z_i = sum_j N_ij,  D_i = 2^ceil(log2 Z_i),  P_ij = N_ij / D_i.

  The numerator is an integer shift when A is an integer; the denominator is a power of two, so
  the whole normaliser is shifts. Each row sums to ``r_i = Z_i / D_i``, a value in (0.5, 1]
  ("partly row-stochastic"). ``pow2_denominator=False`` divides by Z_i itself: the smooth variant,
  a softmax in base 2, whose rows sum to 1.
* ``norm="softmax"``: ``P = softmax(A)`` (the ablation); ``norm="none"``: ``P = A``.
* ``Y = P V`` (the attention output before its neuron); ``bipolar_attention`` adds the LIF ``SN(Y)``.

Backward through Shiftmax. ceil() has a zero derivative almost everywhere, and using it would drop
the normalising term of the gradient. We instead pass the rounding factor ``r_i`` straight through
as a constant: ``P = r_i * softmax2(A)_i`` with ``r_i`` detached, which gives

      dL/dA_ik = ln2 * P_ik * (dL/dP_ik - sum_j P_ij dL/dP_ij / r_i).

This gradient is shift-consistent: adding a constant to a row of A leaves P unchanged, and the
gradient sums to zero over each row. With ``pow2_denominator=False`` r_i = 1 and it is the exact
gradient of the smooth variant (checked by gradcheck). Fused backends use the FlashAttention form
of the same formula: ``sum_j P_ij dL/dP_ij = sum_c dL/dY_ic Y_ic``.
"""
from __future__ import annotations

import torch

NORMS = ("shiftmax", "softmax", "none")


def pow2_ceil(z: torch.Tensor) -> torch.Tensor:
    """The smallest power of two >= z (z > 0), exactly, from the float's exponent bits."""
    mantissa, exponent = torch.frexp(z)  # z = mantissa * 2^exponent, mantissa in [0.5, 1)
    exponent = exponent - (mantissa == 0.5).to(exponent.dtype)
    return torch.ldexp(torch.ones_like(z), exponent)


def shiftmax(scores: torch.Tensor, pow2_denominator: bool = True) -> torch.Tensor:
    """Row normaliser of the last dimension; forward exact, backward as the module docstring says."""
    exponent = scores - scores.amax(dim=-1, keepdim=True).detach()
    numerator = torch.exp2(exponent)
    row_total = numerator.sum(dim=-1, keepdim=True)
    if not pow2_denominator:
        return numerator / row_total
    denominator = pow2_ceil(row_total.detach())
    exact = numerator.detach() / denominator
    # The smooth base-2 softmax carries the gradient; r = Z/D rides along as a detached constant.
    smooth = numerator / row_total * (row_total.detach() / denominator)
    return exact + (smooth - smooth.detach())


def normalise(scores: torch.Tensor, norm: str, pow2_denominator: bool = True) -> torch.Tensor:
    if norm == "shiftmax":
        return shiftmax(scores, pow2_denominator)
    if norm == "softmax":
        return torch.softmax(scores, dim=-1)
    if norm == "none":
        return scores
    raise ValueError(f"norm: expected one of {NORMS}, got {norm!r}")


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, norm: str = "shiftmax",
              pow2_denominator: bool = True) -> torch.Tensor:
    """Y = norm(scale * Q K^T) V for q, k [..., N, d], v [..., N, dv]; half inputs compute in float32."""
    compute = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
    scores = scale * (q.to(compute) @ k.to(compute).transpose(-1, -2))
    probs = normalise(scores, norm, pow2_denominator)
    return (probs @ v.to(compute)).to(q.dtype)


def row_sums(q: torch.Tensor, k: torch.Tensor, scale: float, pow2_denominator: bool = True) -> torch.Tensor:
    """Sum of each Shiftmax row, r_i in (0.5, 1] (1 without the power-of-two denominator)."""
    scores = scale * (q.double() @ k.double().transpose(-1, -2))
    return shiftmax(scores, pow2_denominator).sum(dim=-1)


def bipolar_attention(q, k, v, scale: float, norm: str, pow2_denominator: bool, neuron_cfg, v0=None):
    """SN(norm(scale * Q K^T) V), the neuron running over the leading time dimension of q."""
    from ..neuron import naive as neuron_naive
    y = attention(q, k, v, scale, norm, pow2_denominator)
    v0 = torch.zeros(y.shape[1:], dtype=y.dtype, device=y.device) if v0 is None else v0
    spikes, _, _ = neuron_naive.multi_step(y, v0, neuron_cfg)
    return spikes

