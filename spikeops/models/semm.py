"""SEMM-Spikformer (Spiking Transformer with Experts Mixture, Zhou et al., NeurIPS 2024) on spikeops, after
STEP's port (Fancyssc/STEP @c0b31937b8, ``cls/models/static/spikf_semm_cifar.py`` / ``spikf_semm_imagenet.py``,
``cls/configs/spikf_semm/*.yml``; docs/models.md). There is no official code.

A Spikformer (the same patch splitter and head as ``spikformer.Spikformer``) whose encoder blocks are
``x + EMSA(x)``, ``x + EMSP(x)``: EMSA (spikeops.nn.attention) replaces SSA and EMSP replaces the MLP,
as the port does in both variants; every neuron is LIF with τ = 2, θ = 1 and a detached hard reset.

=====================  ===============================  ===========================================
                       ``semm_spikformer_4_384_cifar``  ``semm_spikformer_8_512`` (ImageNet)
=====================  ===============================  ===========================================
patch splitter         SPS, 4x (32² -> 8² tokens)       SPS, 16x (224² -> 14² tokens)
experts m, d_e         4, 96                            4, 96
EMSA scale s           0.125                            1 (the port sets 0.125 but never applies it)
BN on K and V          yes                              no (the port's ``k_bn``/``v_bn`` are never called)
EMSP hidden width      4C = 1536                        ⌊C/3⌋·16 = 2720 (``mlp_ratio`` is ignored)
T                      4                                4
=====================  ===============================  ===========================================

Differences from the port, none of which changes what a trained network computes:

* The port's Linear/Conv layers in front of a BatchNorm carry a bias where ours (K, V, router, expert
  queries) do not; BatchNorm subtracts the mean, so such a bias has no effect. The CIFAR port's depthwise
  gate conv has no bias, ours (like the ImageNet port's) has one.
* The port runs one neuron per expert (``lif_list``, ``ff_list``); here one neuron runs over the stacked
  experts: the dynamics are element-wise, so the spikes are the same.
* The port hard-codes an 8x8 token grid in EMSP and T = 4 in the expert queries; here both come from the input.
* The port keeps its neurons' membranes between calls and resets them at the start of each forward; here
  every forward starts from rest and keeps no state (the blocks are built with ``stateless=True``).

One difference that does change the CIFAR port's function: its EMSA reshapes the router's BatchNorm output
[T·B, m, N] to [T, B, N, m] without a transpose, so the weight it applies to token n and expert i is the
router value of expert ⌊(n·m + i)/N⌋ at token (n·m + i) mod N: the token and expert axes are swapped (a
scrambled routing). spikeops (like the ImageNet port) routes token n to expert i with the router value of
expert i at token n. ``load_step_state_dict`` loads STEP checkpoints (names mapped, the dropped biases folded
into the BatchNorm running means, braincog's per-neuron threshold/alpha parameters dropped) and warns that a
STEP-trained CIFAR checkpoint therefore computes something else on spikeops.
"""
from __future__ import annotations

import re
import warnings

import torch
from torch import nn

from ..nn.attention import EMSA, EMSP
from .keymap import unwrap_checkpoint
from .layers import check_backend
from .spikformer import Spikformer

__all__ = ["SEMMBlock", "semm_spikformer", "semm_spikformer_4_384_cifar", "semm_spikformer_8_512",
           "step_state_dict_to_spikeops", "load_step_state_dict"]


class SEMMBlock(nn.Module):
    """``x + EMSA(x)`` then ``x + EMSP(x)`` on [T, B, C, H, W] spike counts. ``kv_norm=False`` drops the
    BatchNorm after the K and V projections, as the ImageNet port does."""

    def __init__(self, dim: int, *, num_experts: int = 4, expert_dim: int = 96, scale: float = 0.125,
                 hidden_dim: int | None = None, kv_norm: bool = True, backend: str = "auto"):
        super().__init__()
        self.attn = EMSA(dim, num_experts, expert_dim, scale, backend=check_backend(backend), stateless=True)
        if not kv_norm:
            self.attn.k_bn = nn.Identity()
            self.attn.v_bn = nn.Identity()
        self.mlp = EMSP(dim, hidden_dim, backend=backend, stateless=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.mlp(x)


def semm_spikformer(*, embed_dim: int, depth: int, imagenet: bool, num_classes: int, T: int = 4,
                    num_experts: int = 4, expert_dim: int = 96, scale: float = 0.125, hidden_dim: int | None = None,
                    kv_norm: bool = True, in_channels: int = 3, backend: str = "auto") -> Spikformer:
    """A Spikformer with SEMM blocks; m (``num_experts``), d_e (``expert_dim``) and s (``scale``) are
    arguments (Decision 6). ``hidden_dim`` defaults to EMSP's 4C."""

    def block(dim: int, backend: str) -> SEMMBlock:
        return SEMMBlock(dim, num_experts=num_experts, expert_dim=expert_dim, scale=scale, hidden_dim=hidden_dim,
                         kv_norm=kv_norm, backend=backend)

    return Spikformer(T=T, in_channels=in_channels, num_classes=num_classes, embed_dim=embed_dim, depth=depth,
                      imagenet=imagenet, backend=backend, block=block)


def semm_spikformer_4_384_cifar(*, num_classes: int = 10, T: int = 4, backend: str = "auto", **kwargs) -> Spikformer:
    """SEMM-Spikformer-4-384, CIFAR 32² (STEP ``spikf_semm_cifar`` with ``cifar10.yml``)."""
    return semm_spikformer(embed_dim=384, depth=4, imagenet=False, num_classes=num_classes, T=T, backend=backend,
                           **kwargs)


def semm_spikformer_8_512(*, num_classes: int = 1000, T: int = 4, backend: str = "auto", **kwargs) -> Spikformer:
    """SEMM-Spikformer-8-512, ImageNet 224² (STEP ``spikf_semm_imagenet`` with ``imgnet.yaml``): no EMSA scale,
    no BN on K/V, EMSP hidden width ⌊512/3⌋·16."""
    kwargs.setdefault("scale", 1.0)
    kwargs.setdefault("kv_norm", False)
    kwargs.setdefault("hidden_dim", 512 // 3 * 16)
    return semm_spikformer(embed_dim=512, depth=8, imagenet=True, num_classes=num_classes, T=T, backend=backend,
                           **kwargs)


# ------------------------------------------------------------------------------------ STEP checkpoints
_STEP_RULES = [
    (r"^patch_embed\.proj_(conv|bn)\.", r"patch_embed.conv1.\1."),
    (r"^patch_embed\.proj_(conv|bn)([123])\.", lambda m: f"patch_embed.conv{int(m.group(2)) + 1}.{m.group(1)}."),
    (r"^patch_embed\.rpe_(conv|bn)\.", r"patch_embed.rpe.\1."),
    (r"\.attn\.(k|v|proj)_(?:linear|conv)\.", r".attn.\1_conv."),
    (r"\.attn\.router1\.", ".attn.router_conv."),
    (r"\.attn\.router2\.", ".attn.router_bn."),
    (r"\.mlp\.(fc[12])_(?:linear|conv)\.", r".mlp.\1_conv."),
    (r"\.mlp\.dw_(conv|bn)\.", r".mlp.gate_\1."),
]
# The port's Linear/Conv layers whose bias spikeops drops (the BatchNorm right after makes it redundant).
_FOLDED = {"k_conv": "k_bn", "v_conv": "v_bn", "router_conv": "router_bn", "q_conv": "q_bn"}
_EXPERT = re.compile(r"^(.*\.attn)\.ff_list\.(\d+)\.unit_(linear|conv|bn)\.(\w+)$")


def _is_braincog_neuron_state(key: str) -> bool:
    """braincog neurons hold a per-neuron ``threshold`` and their surrogate's ``alpha`` as parameters."""
    path = key.split(".")[:-1]
    return any("lif" in part or part == "router3" for part in path)


def step_state_dict_to_spikeops(state_dict, model: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """A checkpoint of STEP's SEMM port (``spikf_semm_cifar`` / ``spikf_semm_imagenet``) as a spikeops
    SEMM-Spikformer state dict:

    * names mapped (``patch_embed.proj_conv{,1,2,3}`` -> ``patch_embed.conv{1..4}``, ``rpe_*`` -> ``rpe``,
      ``attn.{k,v,proj}_{linear,conv}`` -> ``attn.*_conv``, ``router1``/``router2`` -> ``router_conv``/``router_bn``,
      ``mlp.fc{1,2}_*`` -> ``fc{1,2}_conv``, ``mlp.dw_*`` -> ``gate_*``); Linear weights become 1x1 conv weights;
    * the m experts' ``ff_list.i.unit_{linear,conv}`` / ``unit_bn`` concatenated, in expert order, into
      ``q_conv`` / ``q_bn``;
    * the biases spikeops drops (K, V, router, expert queries) folded into the next BatchNorm's running mean
      (``running_mean - bias``): in eval mode BN(Wx + b) with the port's statistics equals BN(Wx) with the folded
      ones, and in training mode the batch mean removes b either way;
    * braincog's per-neuron ``threshold`` and surrogate ``alpha`` parameters dropped (a threshold other than 1
      is refused: every spikeops SEMM neuron fires at 1);
    * given ``model``, entries it does not hold because the port never uses them (the ImageNet port's ``k_bn`` /
      ``v_bn``) dropped, and a depthwise gate bias it holds but the CIFAR port lacks set to zero.
    """
    state = unwrap_checkpoint(state_dict)
    out, experts = {}, {}
    for key, value in state.items():
        if _is_braincog_neuron_state(key):
            if key.endswith(".threshold") and not torch.allclose(value.float(), torch.ones_like(value.float())):
                raise ValueError(f"state_dict: {key!r} = {value.tolist()}; spikeops' SEMM neurons fire at 1")
            continue
        match = _EXPERT.match(key)
        if match:
            prefix, index, kind, name = match.groups()
            layer = "q_bn" if kind == "bn" else "q_conv"
            experts.setdefault((f"{prefix}.{layer}.{name}"), {})[int(index)] = value
            continue
        new = key
        for pattern, replacement in _STEP_RULES:
            new = re.sub(pattern, replacement, new)
        if value.dim() == 2 and re.search(r"\.(attn\.\w+_conv|mlp\.fc[12]_conv)\.weight$", new):
            value = value[..., None] if ".attn." in new else value[..., None, None]
        out[new] = value
    for key, parts in experts.items():
        ordered = [parts[i] for i in sorted(parts)]
        value = ordered[0] if key.endswith("num_batches_tracked") else torch.cat(ordered)
        out[key] = value[..., None] if key.endswith("q_conv.weight") and value.dim() == 2 else value
    for key in [k for k in out if k.endswith(".bias") and k.count(".") >= 2]:
        prefix, layer = key[: -len(".bias")].rsplit(".", 1)
        if layer in _FOLDED:
            bias = out.pop(key)
            mean_key = f"{prefix}.{_FOLDED[layer]}.running_mean"
            if mean_key not in out:
                raise ValueError(f"state_dict: {key!r} has no BatchNorm to fold into (missing {mean_key!r})")
            out[mean_key] = out[mean_key] - bias
    if model is not None:
        own = model.state_dict()
        for key in [k for k in out if k not in own and re.search(r"\.attn\.[kv]_bn\.", k)]:
            del out[key]  # the ImageNet port builds k_bn / v_bn but never calls them
        for key, value in own.items():
            if key.endswith("mlp.gate_conv.bias") and key not in out:
                out[key] = torch.zeros_like(value)
    return out


def load_step_state_dict(model: Spikformer, state_dict, strict: bool = True):
    """Loads a checkpoint of STEP's SEMM port into a spikeops SEMM-Spikformer (see
    ``step_state_dict_to_spikeops`` for the mapping; shape mismatches raise naming the key).

    A checkpoint of the CIFAR port (``spikf_semm_cifar``, recognised by its ``attn.k_linear`` layers) loads,
    with a warning: that port routes the experts with the router output's token and expert axes swapped (its
    router BatchNorm output [T·B, m, N] is reshaped to [T, B, N, m] without a transpose, so the weight it uses
    for token n and expert i is the BN output of expert ⌊(n·m + i)/N⌋ at token (n·m + i) mod N), while spikeops
    routes token n to expert i with the router output of expert i at token n. A STEP-trained CIFAR checkpoint
    therefore computes something else on spikeops. The ImageNet port routes correctly."""
    state = unwrap_checkpoint(state_dict)
    if any(".attn.k_linear." in key for key in state):
        warnings.warn("load_step_state_dict: this is a checkpoint of STEP's CIFAR SEMM port, which routes experts with "
                      "the router output's token and expert axes swapped ([T*B, m, N] reshaped to [T, B, N, m] without "
                      "a transpose); spikeops routes token n to expert i, so this model computes something else than "
                      "the network STEP trained", UserWarning, stacklevel=2)
    converted = step_state_dict_to_spikeops(state, model)
    own = model.state_dict()
    for key, value in converted.items():
        if key in own and own[key].shape != value.shape:
            raise ValueError(f"state_dict: {key!r} has shape {tuple(value.shape)} after mapping from STEP's names, the "
                             f"model expects {tuple(own[key].shape)}; is this checkpoint for a different configuration?")
    return model.load_state_dict(converted, strict=strict)
