"""Reference spiking-transformer backbones built from spikeops operators and standard torch layers.

Every constructor takes ``T=`` (time steps) and ``backend=`` (passed to every spikeops call inside);
``create_model(name, **kwargs)`` builds one by name, ``list_models()`` names them all, and
``set_backend(model, backend)`` switches an existing model's backend without touching its weights.
"""
from __future__ import annotations

from .layers import count_parameters, set_backend
from .qkformer import (QKFormer, qkformer_hst_4_384, qkformer_hst_10_384, qkformer_hst_10_512,
                       qkformer_hst_10_768)
from .qkformer_bipolar import qkformer_bipolar_hst_4_384, qkformer_bipolar_hst_10_384
from .semm import semm_spikformer_4_384_cifar, semm_spikformer_8_512
from .spikformer import Spikformer, spikformer_8_384, spikformer_8_512, spikformer_8_768
from .sdt_v2 import MetaSpikeFormer, sdt_v2_l, sdt_v2_m, sdt_v2_t
from .qsd import AttentionMapRecorder, fgd_loss, qsd_sdt_v2_l, qsd_sdt_v2_m, qsd_sdt_v2_t
from .lsq import LSQConv1d, LSQConv2d, LSQLinear, LSQQuantizer
from .spikformer_cifar import spikformer_2_384_cifar, spikformer_4_256_cifar, spikformer_4_384_cifar

MODELS = {
    "qkformer_hst_10_384": qkformer_hst_10_384,
    "qkformer_hst_10_512": qkformer_hst_10_512,
    "qkformer_hst_10_768": qkformer_hst_10_768,
    "qkformer_hst_4_384": qkformer_hst_4_384,
    "spikformer_8_384": spikformer_8_384,
    "spikformer_8_512": spikformer_8_512,
    "spikformer_8_768": spikformer_8_768,
    "spikformer_4_384_cifar": spikformer_4_384_cifar,
    "spikformer_4_256_cifar": spikformer_4_256_cifar,
    "spikformer_2_384_cifar": spikformer_2_384_cifar,
    "semm_spikformer_4_384_cifar": semm_spikformer_4_384_cifar,
    "semm_spikformer_8_512": semm_spikformer_8_512,
    "qkformer_bipolar_hst_4_384": qkformer_bipolar_hst_4_384,
    "qkformer_bipolar_hst_10_384": qkformer_bipolar_hst_10_384,
    "sdt_v2_t": sdt_v2_t,
    "sdt_v2_m": sdt_v2_m,
    "sdt_v2_l": sdt_v2_l,
    "qsd_sdt_v2_t": qsd_sdt_v2_t,
    "qsd_sdt_v2_m": qsd_sdt_v2_m,
    "qsd_sdt_v2_l": qsd_sdt_v2_l,
}


def list_models() -> list[str]:
    return sorted(MODELS)


def create_model(name: str, **kwargs):
    """The model called ``name`` (see ``list_models()``), built with ``kwargs`` (``T``, ``backend``, ...)."""
    if name not in MODELS:
        raise ValueError(f"name: expected one of {list_models()}, got {name!r}")
    return MODELS[name](**kwargs)


__all__ = ["MODELS", "list_models", "create_model", "set_backend", "count_parameters", "QKFormer", "Spikformer",
           "MetaSpikeFormer", "AttentionMapRecorder", "fgd_loss", "LSQQuantizer", "LSQConv1d", "LSQConv2d",
           "LSQLinear", *MODELS]
