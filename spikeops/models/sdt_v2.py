"""Spike-driven Transformer v2 (Meta-SpikeFormer, ICLR 2024) on spikeops (docs/models.md).

As in the official code (BICLab/Spike-Driven-Transformer-V2 @35f245f4f7, ``classification/models.py``,
``Spiking_vit_MetaFormer``), with real-valued "membrane shortcut" residuals throughout:

* stage 1-2 (conv): ``MS_DownSampling`` (optional LIF, conv, BN), then ``MS_ConvBlock`` =
  ``x + SepConv(x)`` followed by ``x + BN(Conv3x3(LIF(BN(Conv3x3(LIF(x))))))`` (4x expansion);
  SepConv is LIF-Conv1x1-BN-LIF-DWConv7x7-Conv1x1-BN.
* stage 3-4 (transformer): ``x + Attn(x)``, ``x + MLP(x)``. Attention: ``xs = LIF(x)``;
  ``Q,K,V = LIF(BN(RepConv(xs)))``; ``Y = SN_0.5(Q (Kᵀ V) · 0.125)`` (one fused
  ``spikeops.ops.attention.spiking_self_attention`` call); ``out = BN(RepConv(Y))``. RepConv is
  Conv1x1-BN(padded with its own zero-input value)-DWConv3x3-Conv1x1-BN.
* head: mean over tokens, LIF over T, Linear, mean over T. ``distillation_head=True`` adds the
  fine-tuning ``head_kd`` (DeiT-style): training returns both logits, eval their average.

Sub-module names are the official ones (``downsample1_1``, ``ConvBlock1_1``, ``block3``, ``q_conv``, ...),
so an official checkpoint loads with plain ``load_state_dict`` (its neurons hold no parameters).

Sizes. The paper's three ImageNet models have 15.1 M, 31.3 M and 55.4 M parameters; the official
constructors ``metaspikformer_8_384`` / ``_8_512`` give 31.3 M / 55.4 M (and ``_8_768`` 123.7 M), and the
15.1 M model is the ``[64, 128, 256, 360]`` configuration (QSD-Transformer's ``spikformer_8_15M_CAFormer``,
same architecture). Hence ``sdt_v2_t`` = 15.1 M, ``sdt_v2_m`` = 31.3 M (8-384), ``sdt_v2_l`` = 55.4 M
(8-512, the paper's 80.0 % model with 55 M).

Variants (QSD-Transformer, ``spikeops.models.qsd``) change only what ``MetaFormerParts`` builds: the
neurons, the conv/linear layers, the attention core and the residual layer-scale.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .attention import self_attention_core
from ..nn.neurons import official_lif
from ..nn.packing import enable_spike_packing
from .layers import check_backend, to_time_major

__all__ = ["MetaFormerParts", "MetaSpikeFormer", "LinearSpikingAttentionCore", "RepConv", "SepConv",
           "sdt_v2_t", "sdt_v2_m", "sdt_v2_l", "SDT_V2_CONFIGS"]

SDSA_SCALE = 0.125

# Name: (stage widths, blocks in stage 3 and 4). Every official configuration has 8 heads and MLP ratio 4.
SDT_V2_CONFIGS = {
    "t": ((64, 128, 256, 360), (6, 2)),
    "m": ((96, 192, 384, 480), (6, 2)),
    "l": ((128, 256, 512, 640), (6, 2)),
}


def _over_time(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module`` on the [T·B, ...] flattening of a time-major [T, B, ...] tensor."""
    T, B = x.shape[:2]
    y = module(x.flatten(0, 1))
    return y.reshape(T, B, *y.shape[1:])


class LinearSpikingAttentionCore(nn.Module):
    """``SN_0.5(Q (Kᵀ V) · scale)`` per head over spikes [T, B, C, N], the LIF over T fused in."""

    def __init__(self, num_heads: int, scale: float = SDSA_SCALE, backend: str = "auto"):
        super().__init__()
        self.num_heads, self.scale, self.backend = num_heads, scale, check_backend(backend)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self_attention_core(q, k, v, self.num_heads, self.scale, self.backend)

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, scale={self.scale}, backend={self.backend}"


class MetaFormerParts:
    """The layers a Meta-SpikeFormer is made of. This base builds SDT v2 (binary LIF, float weights)."""

    layer_scale_init: float | None = None

    def neuron(self, backend: str) -> nn.Module:
        return official_lif(backend, stateless=True)

    def conv2d(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1, padding: int = 0,
               groups: int = 1, bias: bool = True) -> nn.Module:
        return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, groups=groups,
                         bias=bias)

    def conv1d(self, in_channels: int, out_channels: int) -> nn.Module:
        return nn.Conv1d(in_channels, out_channels, kernel_size=1)

    def linear(self, in_features: int, out_features: int) -> nn.Module:
        return nn.Linear(in_features, out_features)

    def attention_core(self, num_heads: int, backend: str) -> nn.Module:
        return LinearSpikingAttentionCore(num_heads, backend=backend)


class BNAndPad(nn.Module):
    """BatchNorm2d, then a border of ``pad`` pixels holding what the BN maps a zero input to, so that
    ``BN(Conv1x1(x))`` padded equals ``BN(Conv1x1(pad(x)))`` and RepConv re-parameterises into one conv."""

    def __init__(self, pad: int, num_features: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features)
        self.pad_pixels = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(x)
        p = self.pad_pixels
        if p == 0:
            return y
        bn = self.bn
        # The official code uses the running statistics here in training mode too; kept for its checkpoints.
        pad_value = bn.bias.detach() - bn.running_mean * bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
        y = F.pad(y, [p] * 4)
        pad_value = pad_value.view(1, -1, 1, 1).to(y.dtype)
        y[:, :, :p, :] = pad_value
        y[:, :, -p:, :] = pad_value
        y[:, :, :, :p] = pad_value
        y[:, :, :, -p:] = pad_value
        return y


class RepConv(nn.Module):
    """Conv1x1 - BNAndPad - DWConv3x3 - Conv1x1 - BN on [N, C, H, W]; keeps H, W."""

    def __init__(self, in_channels: int, out_channels: int, parts: MetaFormerParts):
        super().__init__()
        self.body = nn.Sequential(
            parts.conv2d(in_channels, in_channels, 1, bias=False),
            BNAndPad(1, in_channels),
            nn.Sequential(parts.conv2d(in_channels, in_channels, 3, groups=in_channels, bias=False),
                          parts.conv2d(in_channels, out_channels, 1, bias=False),
                          nn.BatchNorm2d(out_channels)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class SepConv(nn.Module):
    """MobileNetV2 inverted separable conv (2x expansion, 7x7 depthwise) with a neuron before each
    point-wise stage; [T, B, C, H, W] -> same shape."""

    def __init__(self, dim: int, parts: MetaFormerParts, backend: str, expansion: int = 2, kernel_size: int = 7):
        super().__init__()
        hidden = expansion * dim
        self.lif1 = parts.neuron(backend)
        self.pwconv1 = parts.conv2d(dim, hidden, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.lif2 = parts.neuron(backend)
        self.dwconv = parts.conv2d(hidden, hidden, kernel_size, padding=kernel_size // 2, groups=hidden, bias=False)
        self.pwconv2 = parts.conv2d(hidden, dim, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _over_time(lambda y: self.bn1(self.pwconv1(y)), self.lif1(x))
        return _over_time(lambda y: self.bn2(self.pwconv2(self.dwconv(y))), self.lif2(x))


class MSConvBlock(nn.Module):
    """Conv-stage block: ``x + SepConv(x)``, then a residual 3x3-conv MLP (``mlp_ratio`` expansion)."""

    def __init__(self, dim: int, mlp_ratio: int, parts: MetaFormerParts, backend: str):
        super().__init__()
        hidden = dim * mlp_ratio
        self.Conv = SepConv(dim, parts, backend)
        self.lif1 = parts.neuron(backend)
        self.conv1 = parts.conv2d(dim, hidden, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.lif2 = parts.neuron(backend)
        self.conv2 = parts.conv2d(hidden, dim, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.Conv(x) + x
        y = _over_time(lambda z: self.bn1(self.conv1(z)), self.lif1(x))
        return x + _over_time(lambda z: self.bn2(self.conv2(z)), self.lif2(y))


class MSMLP(nn.Module):
    """Neuron - Conv1d(1x1, bias) - BN, twice, over tokens; [T, B, C, H, W] -> same shape."""

    def __init__(self, dim: int, hidden: int, parts: MetaFormerParts, backend: str):
        super().__init__()
        self.fc1_conv = parts.conv1d(dim, hidden)
        self.fc1_bn = nn.BatchNorm1d(hidden)
        self.fc1_lif = parts.neuron(backend)
        self.fc2_conv = parts.conv1d(hidden, dim)
        self.fc2_bn = nn.BatchNorm1d(dim)
        self.fc2_lif = parts.neuron(backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = _over_time(lambda y: self.fc1_bn(self.fc1_conv(y)), self.fc1_lif(x.flatten(3)))
        x = _over_time(lambda y: self.fc2_bn(self.fc2_conv(y)), self.fc2_lif(x))
        return x.reshape(shape)


class MSAttention(nn.Module):
    """Meta-SpikeFormer attention (official ``MS_Attention_RepConv_qkv_id``) around a swappable core."""

    def __init__(self, dim: int, num_heads: int, parts: MetaFormerParts, backend: str):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads: must divide dim={dim}, got {num_heads}")
        self.num_heads = num_heads
        self.head_lif = parts.neuron(backend)
        for name in ("q", "k", "v"):
            setattr(self, f"{name}_conv", nn.Sequential(RepConv(dim, dim, parts), nn.BatchNorm2d(dim)))
            setattr(self, f"{name}_lif", parts.neuron(backend))
        self.attn = parts.attention_core(num_heads, backend)
        self.proj_conv = nn.Sequential(RepConv(dim, dim, parts), nn.BatchNorm2d(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = self.head_lif(x)
        q, k, v = (getattr(self, f"{n}_lif")(_over_time(getattr(self, f"{n}_conv"), x)).flatten(3) for n in "qkv")
        y = self.attn(q, k, v).reshape(shape)
        return _over_time(self.proj_conv, y)


class MSBlock(nn.Module):
    """``x + Attn(x)``, ``x + MLP(x)``; with ``layer_scale_init``, each branch is scaled per channel by a
    learnable vector (QSD-Transformer) initialised to that value."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int, parts: MetaFormerParts, backend: str):
        super().__init__()
        self.attn = MSAttention(dim, num_heads, parts, backend)
        self.mlp = MSMLP(dim, dim * mlp_ratio, parts, backend)
        if parts.layer_scale_init is not None:
            self.layer_scale1 = nn.Parameter(torch.full((dim,), parts.layer_scale_init))
            self.layer_scale2 = nn.Parameter(torch.full((dim,), parts.layer_scale_init))
        else:
            self.layer_scale1 = self.layer_scale2 = None

    @staticmethod
    def _scaled(y: torch.Tensor, scale) -> torch.Tensor:
        return y if scale is None else y * scale.view(1, 1, -1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self._scaled(self.attn(x), self.layer_scale1)
        return x + self._scaled(self.mlp(x), self.layer_scale2)


class MSDownSampling(nn.Module):
    """[neuron] - Conv (with bias) - BN; the first one, on the image itself, has no neuron."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int,
                 first_layer: bool, parts: MetaFormerParts, backend: str):
        super().__init__()
        self.encode_conv = parts.conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding)
        self.encode_bn = nn.BatchNorm2d(out_channels)
        self.encode_lif = None if first_layer else parts.neuron(backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.encode_lif is not None:
            x = self.encode_lif(x)
        return _over_time(lambda y: self.encode_bn(self.encode_conv(y)), x)


def _check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return value


class MetaSpikeFormer(nn.Module):
    """``forward`` takes [B, C, H, W] (repeated T times) or [T, B, C, H, W] and returns logits [B, classes]
    (with ``distillation_head``: ``(logits, kd_logits)`` in training, their mean in eval).

    The network is fully convolutional (tokens = (H/16)·(W/16)); ``img_size``, when given, makes inputs of
    any other square size an error (the published models are trained at 224), None accepts every size."""

    def __init__(self, *, T: int = 1, in_channels: int = 3, num_classes: int = 1000,
                 embed_dims=(64, 128, 256, 360), depths=(6, 2), num_heads: int = 8, mlp_ratio: int = 4,
                 img_size: int | None = None, distillation_head: bool = False, backend: str = "auto",
                 parts: MetaFormerParts | None = None):
        super().__init__()
        self.T = _check_positive_int("T", T)
        _check_positive_int("num_classes", num_classes)
        _check_positive_int("num_heads", num_heads)
        _check_positive_int("mlp_ratio", mlp_ratio)
        if img_size is not None:
            _check_positive_int("img_size", img_size)
        if len(embed_dims) != 4 or any(isinstance(d, bool) or not isinstance(d, int) or d < 2 or d % 2
                                       for d in embed_dims):
            raise ValueError(f"embed_dims: expected four even positive ints, got {embed_dims!r}")
        if len(depths) != 2 or any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in depths):
            raise ValueError(f"depths: expected two non-negative ints (blocks in stages 3 and 4), got {depths!r}")
        for dim in embed_dims[2:]:
            if dim % num_heads:
                raise ValueError(f"num_heads: must divide the transformer widths {embed_dims[2:]}, got {num_heads}")
        check_backend(backend)
        parts = parts if parts is not None else MetaFormerParts()
        self.img_size = img_size
        e0, e1, e2, e3 = embed_dims

        def down(cin, cout, k, stride, first=False):
            return MSDownSampling(cin, cout, k, stride, k // 2, first, parts, backend)

        def conv_block(dim):
            return nn.ModuleList([MSConvBlock(dim, mlp_ratio, parts, backend)])

        def blocks(dim, depth):
            return nn.ModuleList([MSBlock(dim, num_heads, mlp_ratio, parts, backend) for _ in range(depth)])

        self.downsample1_1 = down(in_channels, e0 // 2, 7, 2, first=True)
        self.ConvBlock1_1 = conv_block(e0 // 2)
        self.downsample1_2 = down(e0 // 2, e0, 3, 2)
        self.ConvBlock1_2 = conv_block(e0)
        self.downsample2 = down(e0, e1, 3, 2)
        self.ConvBlock2_1 = conv_block(e1)
        self.ConvBlock2_2 = conv_block(e1)
        self.downsample3 = down(e1, e2, 3, 2)
        self.block3 = blocks(e2, depths[0])
        self.downsample4 = down(e2, e3, 3, 1)
        self.block4 = blocks(e3, depths[1])
        self.lif = parts.neuron(backend)
        self.head = parts.linear(e3, num_classes)
        self.head_kd = parts.linear(e3, num_classes) if distillation_head else None
        for head in (self.head, self.head_kd):
            if head is not None:
                nn.init.trunc_normal_(head.weight, std=0.02)
                nn.init.zeros_(head.bias)
        enable_spike_packing(self)  # spikes kept as bits for backward in training (docs/memory.md)

    checkpoint_block_types = (MSDownSampling, MSConvBlock, MSBlock)  # spikeops.minimum_memory's default

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Time-major features [T, B, C, H/16, W/16] before the head."""
        x = to_time_major(x, self.T)
        if self.img_size is not None and tuple(x.shape[-2:]) != (self.img_size, self.img_size):
            raise ValueError(f"x: expected {self.img_size}x{self.img_size} images (img_size), got shape "
                             f"{tuple(x.shape)}; build the model with img_size=None to accept any size")
        x = self.downsample1_1(x)
        x = self.ConvBlock1_1[0](x)
        x = self.downsample1_2(x)
        x = self.ConvBlock1_2[0](x)
        x = self.downsample2(x)
        x = self.ConvBlock2_2[0](self.ConvBlock2_1[0](x))
        x = self.downsample3(x)
        for block in self.block3:
            x = block(x)
        x = self.downsample4(x)
        for block in self.block4:
            x = block(x)
        return x

    def forward(self, x: torch.Tensor):
        spikes = self.lif(self.forward_features(x).flatten(3).mean(3))
        logits = self.head(spikes).mean(0)
        if self.head_kd is None:
            return logits
        kd_logits = self.head_kd(spikes).mean(0)
        return (logits, kd_logits) if self.training else (logits + kd_logits) / 2


def _sdt_v2(size: str, *, num_classes: int, T: int, backend: str, img_size, **kwargs) -> MetaSpikeFormer:
    embed_dims, depths = SDT_V2_CONFIGS[size]
    kwargs.setdefault("embed_dims", embed_dims)
    kwargs.setdefault("depths", depths)
    return MetaSpikeFormer(T=T, num_classes=num_classes, backend=backend, img_size=img_size, **kwargs)


def sdt_v2_t(*, num_classes: int = 1000, T: int = 1, img_size: int | None = None, backend: str = "auto",
             **kwargs) -> MetaSpikeFormer:
    """Meta-SpikeFormer 15.1 M (widths 64/128/256/360, 6 + 2 attention blocks), ImageNet 224²."""
    return _sdt_v2("t", num_classes=num_classes, T=T, img_size=img_size, backend=backend, **kwargs)


def sdt_v2_m(*, num_classes: int = 1000, T: int = 1, img_size: int | None = None, backend: str = "auto",
             **kwargs) -> MetaSpikeFormer:
    """Meta-SpikeFormer 31.3 M (official ``metaspikformer_8_384``: widths 96/192/384/480)."""
    return _sdt_v2("m", num_classes=num_classes, T=T, img_size=img_size, backend=backend, **kwargs)


def sdt_v2_l(*, num_classes: int = 1000, T: int = 1, img_size: int | None = None, backend: str = "auto",
             **kwargs) -> MetaSpikeFormer:
    """Meta-SpikeFormer 55.4 M (official ``metaspikformer_8_512``: widths 128/256/512/640; 80.0 % at T=4)."""
    return _sdt_v2("l", num_classes=num_classes, T=T, img_size=img_size, backend=backend, **kwargs)
