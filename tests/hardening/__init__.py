"""Hardening suite: bad input, odd layouts, empty and huge tensors, NaN/Inf, determinism, leaks,
registration and fuzzing, run over every operator listed in ``registry.CASES``.

A package (not a bare test directory) so that its conftest does not shadow ``tests/conftest.py``,
which the other test files import as ``conftest``.
"""
