"""The hook an operator module uses so that ``spikeops.energy.profile`` sees computation it cannot observe
on its own (fused Triton/CUDA kernels, custom ops):

    from spikeops.energy.hooks import counted
    from spikeops.energy.attention_counters import ssa_counts

    @counted(ssa_counts)
    def spiking_self_attention(q, k, v, heads=None, *, ...): ...

``counter(args, kwargs, output)`` returns ``OpCount`` records (``spikeops.energy.count_matmul`` builds one
from two operands). Outside a profile the wrapper only adds one global lookup per call. Inside a profile
the wrapped call's own torch calls are not counted again; its records are attributed to the module that
made the call, labelled with the function's name unless the counter gives a label.
"""
from __future__ import annotations

import functools
from typing import Callable

__all__ = ["counted"]

# The recorder of the profile now running (set and cleared by spikeops.energy.profiler), or None.
active_recorder = None


def counted(counter: Callable) -> Callable:
    if not callable(counter):
        raise TypeError(f"counter: expected a callable (args, kwargs, output) -> [OpCount], got {counter!r}")

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            recorder = active_recorder
            if recorder is None:
                return fn(*args, **kwargs)
            return recorder.call_counted(fn, counter, args, kwargs)
        return wrapper
    return decorate
