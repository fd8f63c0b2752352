"""Spikformer for CIFAR (32², T = 4) on spikeops, as in the official ``cifar10/model.py``
(ZK-Zhou/spikformer @6212689818, ``cifar10/cifar10.yml``; docs/models.md).

The same network as ``spikformer.Spikformer`` with two CIFAR settings: the patch splitter downsamples 4x
(max-pools after its third and fourth LIF only: 32² -> 8² = 64 tokens), and Q/K/V are ``nn.Linear`` with a
bias. The official CIFAR code runs its Linear layers on token-major [T·B, N, C]; here they are the
equivalent 1x1 convolutions on [T·B, C, N] (same numbers; the checkpoint loader reshapes the weights).

Published parameter counts (Spikformer paper, CIFAR-10): 4-384 9.32 M, 4-256 4.15 M, 2-384 5.76 M. The
official code holds 9.33 / 4.16 / 5.77 M: each block carries two LayerNorms its forward never calls. Without
them (``drop_unused_norms()``) the counts are 9.3247 / 4.1552 / 5.7651 M, the published figures truncated
to two decimals.

Official CIFAR checkpoint keys (``official_key_map``): as for ImageNet (``spikformer`` module docstring), with
``block.j.attn.{q,k,v,proj}_linear`` -> ``block.j.attn.{q,k,v,proj}.conv`` and ``block.j.mlp.fc{1,2}_linear``
-> ``block.j.mlp.fc{1,2}.conv`` (Linear weights [out, in] reshaped to the 1x1 conv's [out, in, 1(, 1)]).
"""
from __future__ import annotations

from . import spikformer
from .keymap import rename_keys, unwrap_checkpoint
from .spikformer import Spikformer

__all__ = ["spikformer_cifar", "spikformer_4_384_cifar", "spikformer_4_256_cifar", "spikformer_2_384_cifar",
           "official_key_map", "load_official_state_dict"]


def spikformer_cifar(*, embed_dim: int, depth: int, num_heads: int, num_classes: int = 10, T: int = 4,
                     backend: str = "auto", **kwargs) -> Spikformer:
    return Spikformer(T=T, num_classes=num_classes, embed_dim=embed_dim, num_heads=num_heads, depth=depth,
                      imagenet=False, qkv_bias=True, backend=backend, **kwargs)


def spikformer_4_384_cifar(*, num_classes: int = 10, T: int = 4, backend: str = "auto", **kwargs) -> Spikformer:
    """Spikformer-4-384, CIFAR 32², 12 heads (``cifar10.yml``); 9.32 M parameters published."""
    kwargs.setdefault("num_heads", 12)
    return spikformer_cifar(embed_dim=384, depth=4, num_classes=num_classes, T=T, backend=backend, **kwargs)


def spikformer_4_256_cifar(*, num_classes: int = 10, T: int = 4, backend: str = "auto", **kwargs) -> Spikformer:
    """Spikformer-4-256, CIFAR 32²; 4.15 M parameters published. The paper gives no head count: 8 (head dim 32,
    as 384/12) is our choice."""
    kwargs.setdefault("num_heads", 8)
    return spikformer_cifar(embed_dim=256, depth=4, num_classes=num_classes, T=T, backend=backend, **kwargs)


def spikformer_2_384_cifar(*, num_classes: int = 10, T: int = 4, backend: str = "auto", **kwargs) -> Spikformer:
    """Spikformer-2-384, CIFAR 32², 12 heads; 5.76 M parameters published."""
    kwargs.setdefault("num_heads", 12)
    return spikformer_cifar(embed_dim=384, depth=2, num_classes=num_classes, T=T, backend=backend, **kwargs)


_LINEAR_RULES = [
    (r"\.attn\.(q|k|v|proj)_linear\.", r".attn.\1.conv."),
    (r"\.mlp\.fc([12])_linear\.", r".mlp.fc\1.conv."),
]


def official_key_map(keys) -> dict[str, str]:
    """{official key: spikeops key} for an official CIFAR Spikformer state dict (``cifar10/model.py``)."""
    return rename_keys(keys, spikformer._RULES + _LINEAR_RULES)


def load_official_state_dict(model: Spikformer, state_dict, strict: bool = True):
    """Loads an official CIFAR Spikformer checkpoint into ``model``: keys renamed, Linear weights reshaped to
    the 1x1 convolutions' shape; shape mismatches raise naming the key."""
    state = unwrap_checkpoint(state_dict)
    own = model.state_dict()
    mapping = official_key_map(state)
    for key, value in state.items():
        ours = own.get(mapping[key])
        if key.endswith("_linear.weight") and ours is not None and value.dim() == 2 and ours.shape[:2] == value.shape:
            state[key] = value.reshape(ours.shape)
    return spikformer.load_official_state_dict(model, state, strict=strict, key_map=official_key_map)
