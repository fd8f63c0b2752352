"""QKFormer (Zhou et al. 2024, arXiv 2403.16552) on spikeops: hierarchical spiking transformer with SPEDS
patch embedding, Q-K token attention in stages 1-2 and Spikformer SSA in stage 3 (docs/models.md).

Architecture as in the official code (zhouchenlin2096/QKFormer @c2a00e8e54, ``imagenet/qkformer.py``,
``cifar10/model.py``). ``faithful=True`` reproduces its one numerically visible quirk: stage 3's SSA feeds
``proj_lif`` the flattened [T·B, C, N] tensor, so that neuron integrates over T·B steps and leaks membrane
from one sample into the next. Official checkpoints were trained with that behaviour; the default
(``faithful=False``) is the paper's intent (the neuron runs over T, each sample independent). With batch
size 1 and T = 1 the two agree.

Official checkpoint keys load through ``load_official_state_dict`` / ``official_key_map``; loading one switches
the model to ``faithful`` behaviour (or refuses) unless ``faithful=False`` is passed:

=====================================================  =========================================
official key prefix                                     spikeops key prefix
=====================================================  =========================================
``patch_embed1.proj_conv`` / ``proj_bn``               ``patch_embed1.conv1.conv`` / ``.bn``
``patch_embed1.proj1_*`` / ``proj2_*``                 ``patch_embed1.conv2.*`` / ``conv3.*``
``patch_embed{2,3}.proj3_*`` / ``proj4_*``             ``patch_embed{2,3}.conv1.*`` / ``conv2.*``
``patch_embed*.proj_res_*``                            ``patch_embed*.shortcut.*``
``stage*.j.tssa.`` / ``stage3.j.ssa.`` (CIFAR)         ``stage*.j.attn.``
``*.{q,k,v,proj}_conv`` / ``_bn``                      ``*.{q,k,v,proj}.conv`` / ``.bn``
``mlp.fc{1,2}_*`` / ``mlp.mlp{1,2}_*`` (CIFAR)         ``mlp.fc{1,2}.*``
``head``                                               ``head``
=====================================================  =========================================
"""
from __future__ import annotations

import re

import torch
from torch import nn

from ..nn.packing import enable_spike_packing
from ..ops.spike_pack import add_spikes
from .attention import QKTokenAttention, SpikingSelfAttention
from .keymap import load_mapped_state_dict, rename_keys
from .layers import ConvBN, LIFNeuron, SpikingMLP, check_backend, to_time_major

__all__ = ["QKFormer", "qkformer_hst_10_384", "qkformer_hst_10_512", "qkformer_hst_10_768", "qkformer_hst_4_384",
           "official_key_map", "load_official_state_dict"]


class SPEDSInit(nn.Module):
    """First SPEDS patch embedding (docs/models.md): ImageNet downsamples by 4, CIFAR keeps the resolution."""

    def __init__(self, in_channels: int, dim: int, imagenet: bool, backend: str):
        super().__init__()
        self.imagenet = imagenet
        self.conv1 = ConvBN(in_channels, dim // 2, 3, pool=imagenet)
        self.lif1 = LIFNeuron(backend=backend)
        self.conv2 = ConvBN(dim // 2, dim, 3, pool=imagenet)
        self.lif2 = LIFNeuron(backend=backend)
        if imagenet:
            self.conv3 = ConvBN(dim, dim, 3)
            self.lif3 = LIFNeuron(backend=backend)
        self.shortcut = ConvBN(dim // 2, dim, 1, stride=2 if imagenet else 1)
        self.shortcut_lif = LIFNeuron(backend=backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # ConvBN(x, neuron): the BatchNorm fused into the neuron wherever no max-pool stands between them
        a = self.conv1(x, self.lif1)
        y = self.conv2(a, self.lif2)
        if self.imagenet:
            y = self.conv3(y, self.lif3)
        return add_spikes(y, self.shortcut(a, self.shortcut_lif))


class SPEDSStage(nn.Module):
    """SPEDS-2/3: halves the resolution, doubles the width, with a strided 1x1 shortcut (docs/models.md).
    ImageNet pools after the first conv, the CIFAR code after the second."""

    def __init__(self, dim: int, imagenet: bool, backend: str):
        super().__init__()
        self.conv1 = ConvBN(dim // 2, dim, 3, pool=imagenet)
        self.lif1 = LIFNeuron(backend=backend)
        self.conv2 = ConvBN(dim, dim, 3, pool=not imagenet)
        self.lif2 = LIFNeuron(backend=backend)
        self.shortcut = ConvBN(dim // 2, dim, 1, stride=2)
        self.shortcut_lif = LIFNeuron(backend=backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.conv1(x, self.lif1), self.lif2)
        return add_spikes(y, self.shortcut(x, self.shortcut_lif))


class QKFormerBlock(nn.Module):
    """``x + Attn(x)`` then ``x + MLP(x)`` on SEW-style spike counts."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, self_attention: bool, faithful: bool,
                 backend: str, attention=None):
        super().__init__()
        if attention is not None:
            self.attn = attention(dim, num_heads, backend)
        elif self_attention:
            self.attn = SpikingSelfAttention(dim, num_heads, backend=backend, proj_lif_over_batch=faithful)
        else:
            self.attn = QKTokenAttention(dim, num_heads, backend=backend)
        self.mlp = SpikingMLP(dim, int(dim * mlp_ratio), backend=backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # spike counts added to spike counts: marked as such, so the convolutions reading x keep it as bits
        x = add_spikes(x, self.attn(x))
        return add_spikes(x, self.mlp(x))


class QKFormer(nn.Module):
    """Hierarchical Spiking Transformer. Stage widths are ``embed_dim/4, /2, /1``; ``depths`` counts blocks
    per stage (QKTA, QKTA, SSA). ``forward`` takes [B, C, H, W] (repeated T times) or [T, B, C, H, W] and
    returns logits [B, num_classes] = head(mean over T and tokens). ``self_attention_block(dim, num_heads,
    backend)``, when given, builds stage 3's attention instead of SSA (e.g. bipolar self-attention)."""

    checkpoint_block_types = (SPEDSInit, SPEDSStage, QKFormerBlock)  # spikeops.minimum_memory's default

    def __init__(self, *, T: int = 4, in_channels: int = 3, num_classes: int = 1000, embed_dim: int = 384,
                 num_heads: int | tuple[int, int, int] = 6, depths: tuple[int, int, int] = (1, 2, 7),
                 mlp_ratio: float = 4.0, imagenet: bool = True, faithful: bool = False, backend: str = "auto",
                 self_attention_block=None):
        super().__init__()
        if not isinstance(T, int) or isinstance(T, bool) or T < 1:
            raise ValueError(f"T: expected a positive int, got {T!r}")
        if embed_dim % 8:
            raise ValueError(f"embed_dim: must be divisible by 8 (stage widths embed_dim/4 are halved), got {embed_dim}")
        heads = (num_heads,) * 3 if isinstance(num_heads, int) else tuple(num_heads)
        if len(heads) != 3 or len(depths) != 3:
            raise ValueError(f"num_heads, depths: expected three stages, got {num_heads!r}, {depths!r}")
        check_backend(backend)
        self.T, self.faithful = T, faithful
        dims = (embed_dim // 4, embed_dim // 2, embed_dim)
        self.patch_embed1 = SPEDSInit(in_channels, dims[0], imagenet, backend)
        self.patch_embed2 = SPEDSStage(dims[1], imagenet, backend)
        self.patch_embed3 = SPEDSStage(dims[2], imagenet, backend)
        for index, (dim, h, depth) in enumerate(zip(dims, heads, depths)):
            blocks = [QKFormerBlock(dim, h, mlp_ratio, self_attention=index == 2, faithful=faithful, backend=backend,
                                    attention=self_attention_block if index == 2 else None)
                      for _ in range(depth)]
            setattr(self, f"stage{index + 1}", nn.ModuleList(blocks))
        self.head = nn.Linear(embed_dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        enable_spike_packing(self)  # spikes kept as bits for backward in training (docs/memory.md)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = to_time_major(x, self.T)
        for embed, stage in ((self.patch_embed1, self.stage1), (self.patch_embed2, self.stage2),
                             (self.patch_embed3, self.stage3)):
            x = embed(x)
            for block in stage:
                x = block(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x).flatten(3).mean(3).mean(0))


def qkformer_hst_10_384(*, num_classes: int = 1000, T: int = 4, backend: str = "auto", **kwargs) -> QKFormer:
    """HST-10-384, ImageNet 224², 16.47 M parameters."""
    return QKFormer(T=T, num_classes=num_classes, embed_dim=384, num_heads=6, depths=(1, 2, 7), backend=backend,
                    **kwargs)


def qkformer_hst_10_512(*, num_classes: int = 1000, T: int = 4, backend: str = "auto", **kwargs) -> QKFormer:
    """HST-10-512, ImageNet 224², 29.08 M parameters."""
    return QKFormer(T=T, num_classes=num_classes, embed_dim=512, num_heads=8, depths=(1, 2, 7), backend=backend,
                    **kwargs)


def qkformer_hst_10_768(*, num_classes: int = 1000, T: int = 4, backend: str = "auto", **kwargs) -> QKFormer:
    """HST-10-768, ImageNet 224², 64.96 M parameters."""
    return QKFormer(T=T, num_classes=num_classes, embed_dim=768, num_heads=12, depths=(1, 2, 7), backend=backend,
                    **kwargs)


def qkformer_hst_4_384(*, num_classes: int = 10, T: int = 4, backend: str = "auto", **kwargs) -> QKFormer:
    """HST-4-384, CIFAR-10 32², 6.74 M parameters (blocks 1 QKTA, 1 QKTA, 2 SSA; 8 heads everywhere)."""
    return QKFormer(T=T, num_classes=num_classes, embed_dim=384, num_heads=8, depths=(1, 1, 2), imagenet=False,
                    backend=backend, **kwargs)


_RULES = [
    (r"^patch_embed1\.proj_res_", "patch_embed1.shortcut."),
    (r"^patch_embed1\.proj_", "patch_embed1.conv1."),
    (r"^patch_embed1\.proj1_", "patch_embed1.conv2."),
    (r"^patch_embed1\.proj2_", "patch_embed1.conv3."),
    (r"^(patch_embed[23])\.proj_res_", r"\1.shortcut."),
    (r"^(patch_embed[23])\.proj3_", r"\1.conv1."),
    (r"^(patch_embed[23])\.proj4_", r"\1.conv2."),
    (r"\.(tssa|ssa)\.", ".attn."),
    (r"\.attn\.(q|k|v|proj)_(conv|bn)\.", r".attn.\1.\2."),
    (r"\.mlp\.(?:fc|mlp)([12])_(conv|bn)\.", r".mlp.fc\1.\2."),
]


def official_key_map(keys) -> dict[str, str]:
    """{official key: spikeops key} for an official QKFormer state dict (ImageNet or CIFAR code)."""
    return rename_keys(keys, _RULES)


def load_official_state_dict(model: QKFormer, state_dict, strict: bool = True, faithful: bool = True):
    """Loads an official QKFormer checkpoint (``model`` / ``state_dict`` wrappers and DDP ``module.`` prefixes
    are unwrapped) into ``model``; shape mismatches raise naming the key.

    Official checkpoints were trained with the official stage 3, whose ``proj_lif`` runs over the flattened
    T·B axis (membrane carried from one sample into the next). ``faithful=True`` (the default) therefore puts
    ``model`` in that behaviour (``model.faithful`` and every stage-3 SSA's ``proj_lif_over_batch`` set) before
    loading, and refuses, loading nothing, a model whose stage-3 attention is not SSA (``self_attention_block``).
    ``faithful=False`` loads the weights into the model as it is, which gives other outputs than the official
    code whenever T·B > 1; it has to be asked for."""
    if faithful:
        blocks = list(getattr(model, "stage3", []))
        for index, block in enumerate(blocks):
            if not isinstance(block.attn, SpikingSelfAttention):
                raise ValueError(
                    f"load_official_state_dict: stage3.{index}.attn is {type(block.attn).__name__}, not the SSA of the "
                    "official code, so the official stage-3 behaviour (proj_lif over T·B) cannot be reproduced; pass "
                    "faithful=False to load the weights anyway (outputs then differ from the official code when T·B > 1)")
        for block in blocks:
            block.attn.proj_lif_over_batch = True
        model.faithful = True
    return load_mapped_state_dict(model, state_dict, official_key_map, strict=strict)
