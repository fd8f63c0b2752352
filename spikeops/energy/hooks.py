"""How ``spikeops.energy.profile`` sees computation it cannot observe on its own (fused Triton/CUDA kernels,
custom ops).

* ``register_counter(op_name, counter)``: the operators' public entry points carry stable observation
  names (``spikeops.ops._observe``; ``observable_ops()`` lists them). Energy registers a counter for a
  name and the profiler then observes that entry point; the operators import nothing from energy. This
  is how the spiking-attention operators are counted (``attention_counters``).
* ``@counted(counter)``: the same for a function of one's own, wrapped where it is defined:

    from spikeops.energy.hooks import counted
    from spikeops.energy.attention_counters import ssa_counts

    @counted(ssa_counts)
    def my_attention(q, k, v, heads=None, *, ...): ...

``counter(args, kwargs, output)`` returns ``OpCount`` records (``spikeops.energy.count_matmul`` builds one
from two operands). Outside a profile a counted call costs one global lookup. Inside a profile the
call's own torch calls are not counted again; its records are attributed to the module that made the
call, labelled with the function's name unless the counter gives a label.
"""
from __future__ import annotations

import functools
from typing import Callable

from ..ops import _observe

__all__ = ["counted", "register_counter", "registered_counters"]

# The recorder of the profile now running (set and cleared by spikeops.energy.profiler), or None.
active_recorder = None

_counters: dict[str, Callable] = {}


def _check_counter(counter) -> None:
    if not callable(counter):
        raise TypeError(f"counter: expected a callable (args, kwargs, output) -> [OpCount], got {counter!r}")


def _run(fn: Callable, counter: Callable, args, kwargs):
    recorder = active_recorder
    if recorder is None:
        return fn(*args, **kwargs)
    return recorder.call_counted(fn, counter, args, kwargs)


def counted(counter: Callable) -> Callable:
    _check_counter(counter)

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            return _run(fn, counter, args, kwargs)
        return wrapper
    return decorate


def register_counter(op_name: str, counter: Callable) -> None:
    """``counter(args, kwargs, output) -> iterable of OpCount`` for the operator entry point observable as
    ``op_name`` (see ``spikeops.ops._observe.observable_ops()``); replaces any counter it had."""
    if not isinstance(op_name, str) or not op_name:
        raise ValueError(f"op_name: expected the observable name of an operator entry point, got {op_name!r}")
    _check_counter(counter)
    _counters[op_name] = counter
    _observe.set_observer(op_name, lambda fn, args, kwargs: _run(fn, counter, args, kwargs))


def registered_counters() -> dict[str, Callable]:
    """Op name -> counter, as registered with ``register_counter``."""
    return dict(_counters)
