"""``python -m spikeops.legacy [--backend B] SCRIPT [ARGS...]`` (or ``-m MODULE [ARGS...]``): runs a script
written for ``spikingjelly.clock_driven`` unchanged, with ``spikeops.legacy.install(backend=B)`` done first."""
from __future__ import annotations

import os
import runpy
import sys

from ..backends import BACKENDS

USAGE = ("usage: python -m spikeops.legacy [--backend {" + ",".join(BACKENDS) + "}] (SCRIPT | -m MODULE) [ARGS...]")


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    backend = "auto"
    if argv[:1] == ["--backend"]:
        if len(argv) < 2:
            raise SystemExit(USAGE)
        backend, argv = argv[1], argv[2:]
    elif argv and argv[0].startswith("--backend="):
        backend, argv = argv[0].split("=", 1)[1], argv[1:]
    if not argv or argv[0] in ("-h", "--help"):
        raise SystemExit(USAGE)
    if backend not in BACKENDS:
        raise SystemExit(f"spikeops.legacy: --backend must be one of {BACKENDS}, got {backend!r}")
    from . import install

    install(backend=backend)
    if argv[0] == "-m":
        if len(argv) < 2:
            raise SystemExit(USAGE)
        sys.argv = [argv[1]] + argv[2:]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        return
    script = argv[0]
    if not os.path.isfile(script):
        raise SystemExit(f"spikeops.legacy: no such script: {script!r}")
    sys.argv = argv
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))  # as `python SCRIPT` does
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
