"""A neutral observation point for the public entry points of the operators.

An entry point decorated with ``observable("name")`` runs as it is unless an observer is registered for
``name``; then the observer runs it: ``observer(fn, args, kwargs) -> output``, where ``fn`` is the
undecorated function. This module knows nothing of its observers: a tool above the operators (the
energy profiler, ``spikeops.energy``) registers one to see work the fused kernels do out of autograd's
sight, without the operators importing that tool. The names are stable and listed by ``observable_ops()``.
"""
from __future__ import annotations

import functools
from typing import Callable

__all__ = ["observable", "observable_ops", "set_observer", "remove_observer"]

_entry_points: dict[str, Callable] = {}   # op name -> undecorated entry point
_observers: dict[str, Callable] = {}      # op name -> observer(fn, args, kwargs) -> output


def observable(name: str) -> Callable:
    """Decorator giving an operator entry point the stable observation name ``name``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name: expected a non-empty string, got {name!r}")

    def decorate(fn: Callable) -> Callable:
        if name in _entry_points and _entry_points[name] is not fn:
            raise ValueError(f"name: {name!r} already names the entry point {_entry_points[name]!r}")
        _entry_points[name] = fn

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            observer = _observers.get(name)
            if observer is None:
                return fn(*args, **kwargs)
            return observer(fn, args, kwargs)
        wrapper.op_name = name
        return wrapper
    return decorate


def observable_ops() -> list[str]:
    """The names of the observable entry points defined so far (their modules imported)."""
    return sorted(_entry_points)


def set_observer(name: str, observer: Callable) -> None:
    """Routes every call of the entry point ``name`` through ``observer(fn, args, kwargs)``; replaces any
    observer it had. The name need not be defined yet (its module may be imported later)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name: expected a non-empty string, got {name!r}")
    if not callable(observer):
        raise TypeError(f"observer: expected a callable (fn, args, kwargs) -> output, got {observer!r}")
    _observers[name] = observer


def remove_observer(name: str) -> None:
    _observers.pop(name, None)
