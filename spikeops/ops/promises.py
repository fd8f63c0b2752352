"""Debug mode for the promises an operator call may make to skip a check.

Two arguments promise something about the data so that the fused kernels can skip a pass over it:
``spiking_self_attention(spike_operands=True)`` (binary {0, 1} operands: the Triton kernel then uses int8
products) and ``bipolar_attention`` / ``shiftmax_attention(check_ternary=False)`` (ternary q, k: the fused
kernels then compute integer scores). A broken promise gives backend-dependent results (Triton truncates to
int8, the C++ kernels and the reference use the real values). In debug mode these promises are verified on
every call and every backend, and a broken one raises ``ValueError`` naming the argument:

    SPIKEOPS_CHECK_PROMISES=1 python train.py        # the whole process (read when spikeops is imported)
    with spikeops.ops.promises.check_promises():      # a block of code
        ...

The check costs one pass over the promised tensors and a device synchronisation per call.
"""
from __future__ import annotations

import contextlib
import os

__all__ = ["promises_checked", "check_promises"]

# A plain module global (not a thread-local, not an environment read per call): torch.compile reads it as a
# constant guarded by its value, so compiled graphs stay whole and recompile when the mode changes.
_enabled = os.environ.get("SPIKEOPS_CHECK_PROMISES", "0") not in ("", "0")


def promises_checked() -> bool:
    """True in debug mode: ``SPIKEOPS_CHECK_PROMISES=1`` at import, or inside ``check_promises()``."""
    return _enabled


@contextlib.contextmanager
def check_promises(enabled: bool = True):
    """Within the block, promises are verified (``enabled=True``) or not (``False``), whatever the environment."""
    if not isinstance(enabled, bool):
        raise ValueError(f"enabled: expected True or False, got {enabled!r}")
    global _enabled
    previous, _enabled = _enabled, enabled
    try:
        yield
    finally:
        _enabled = previous
