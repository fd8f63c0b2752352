"""How spikeops.legacy refuses what it cannot run."""
from __future__ import annotations

__all__ = ["LegacyUnsupportedError", "unsupported", "reject_unknown"]


class LegacyUnsupportedError(NotImplementedError):
    """A legacy ``spikingjelly.clock_driven`` class or option that spikeops.legacy does not provide."""


def unsupported(module: str, name: str, instead: str) -> type:
    """A placeholder class: importing it works (a file that imports but never builds it runs), building it
    raises LegacyUnsupportedError naming the class and what to use instead."""

    def __init__(self, *args, **kwargs):
        raise LegacyUnsupportedError(
            f"spikingjelly.clock_driven.{module}.{name} is not supported by spikeops.legacy; use {instead}")

    return type(name, (), {"__init__": __init__, "__module__": f"spikeops.legacy.{module}",
                           "__doc__": f"Unsupported legacy class; building it raises. Use {instead}."})


def reject_unknown(cls: type, unknown: dict, signature: str) -> None:
    """TypeError naming every argument the legacy class does not take."""
    if unknown:
        names = ", ".join(repr(k) for k in sorted(unknown))
        raise TypeError(f"{cls.__name__}: unknown argument(s) {names}; the legacy spikingjelly.clock_driven "
                        f"signature is {cls.__name__}({signature})")
