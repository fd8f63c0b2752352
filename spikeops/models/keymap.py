"""Loading official checkpoints whose module names differ from ours: a key map is an ordered list of
regex substitutions, every one applied to every key in turn."""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn

__all__ = ["rename_keys", "unwrap_checkpoint", "load_mapped_state_dict"]


def rename_keys(keys: Iterable[str], rules) -> dict[str, str]:
    mapping = {}
    for key in keys:
        new = key
        for pattern, replacement in rules:
            new = re.sub(pattern, replacement, new)
        mapping[key] = new
    return mapping


def unwrap_checkpoint(checkpoint) -> dict[str, torch.Tensor]:
    """The tensor dict inside a training checkpoint: ``{"model": ...}`` / ``{"state_dict": ...}`` wrappers and
    DistributedDataParallel's ``module.`` prefix are removed."""
    if not isinstance(checkpoint, Mapping):
        raise TypeError(f"state_dict: expected a mapping of tensors, got {type(checkpoint).__name__}")
    for wrapper in ("model", "state_dict", "model_ema"):
        if wrapper in checkpoint and isinstance(checkpoint[wrapper], Mapping):
            checkpoint = checkpoint[wrapper]
            break
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in checkpoint.items()}


def load_mapped_state_dict(model: nn.Module, checkpoint, key_map: Callable[[Iterable[str]], dict[str, str]],
                           strict: bool = True, ignore: Callable[[str], bool] = lambda key: False):
    """Renames ``checkpoint``'s keys with ``key_map`` and loads them into ``model``.

    ``ignore(official_key)`` drops keys of parameters the official model holds but never uses. Shape
    mismatches raise a ValueError naming both keys; missing/unexpected keys follow ``strict``.
    """
    state = unwrap_checkpoint(checkpoint)
    mapping = key_map(state.keys())
    own = model.state_dict()
    renamed = {}
    for official, ours in mapping.items():
        if ignore(official):
            continue
        value = state[official]
        if ours in own and own[ours].shape != value.shape:
            raise ValueError(f"state_dict: {official!r} (-> {ours!r}) has shape {tuple(value.shape)}, the model "
                             f"expects {tuple(own[ours].shape)}; is this checkpoint for a different configuration?")
        renamed[ours] = value
    return model.load_state_dict(renamed, strict=strict)
