"""``python -m spikeops.energy MODEL_NAME``: the energy table of a backbone (random weights, small input).

    python -m spikeops.energy --list
    python -m spikeops.energy qkformer_hst_4_384 -T 4 --csv layers.csv
    python -m spikeops.energy spikingjelly:sdt_8_384 --image-size 64 --qann-bits 4
"""
from __future__ import annotations

import argparse
import difflib
import json
import sys
import time

import torch

from ..backends import BACKENDS
from .energy_models import ConventionalEnergy, UnifiedEnergy
from .profiler import profile
from .zoo import available_models, build


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def _progress(message: str) -> None:
    """One progress line on stderr (stdout keeps only the table, for redirection)."""
    print(f"spikeops.energy: {message}", file=sys.stderr, flush=True)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m spikeops.energy", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", nargs="?", help="backbone name (see --list)")
    p.add_argument("--list", action="store_true", help="list the backbone names and exit")
    p.add_argument("-T", "--time-steps", type=_positive_int, default=4)
    p.add_argument("--image-size", type=_positive_int, default=None, help="input height = width (default: per model)")
    p.add_argument("--batch-size", type=_positive_int, default=1)
    p.add_argument("--num-classes", type=_positive_int, default=10)
    p.add_argument("--backend", default="torch", choices=BACKENDS, help="spikeops backend for spikeops.models backbones")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--e-ac", type=_non_negative_float, default=0.9, help="pJ per accumulate")
    p.add_argument("--e-mac", type=_non_negative_float, default=4.6, help="pJ per multiply-accumulate")
    p.add_argument("--e-mem", type=_non_negative_float, default=3.12,
                   help="pJ per memory access of one word (unified model)")
    p.add_argument("--snn-weight-bits", type=_positive_int, default=32)
    p.add_argument("--qann-bits", type=_positive_int, default=8)
    p.add_argument("--qann-bit-sparsity", type=_non_negative_float, default=0.5)
    p.add_argument("--csv", metavar="PATH", help="also write the per-layer table as CSV")
    p.add_argument("--json", metavar="PATH", help="also write the whole profile as JSON")
    return p


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.list:
        names = sorted(available_models())
        print("\n".join(names) if names else "no backbones available (spikeops.models / spikingjelly missing)")
        return 0
    if not args.model:
        parser.error("a model name is required (see --list)")
    names = available_models()
    if args.model not in names:
        close = difflib.get_close_matches(args.model, list(names), n=3)
        parser.error(f"unknown model {args.model!r}" + (f"; did you mean {', '.join(close)}?" if close else "")
                     + " (--list shows every name)")
    if args.qann_bit_sparsity > 1:
        parser.error(f"--qann-bit-sparsity: expected a fraction in [0, 1], got {args.qann_bit_sparsity}")
    _progress(f"building {args.model} (random weights, seed {args.seed}, T={args.time_steps}) and profiling one "
              "forward pass ...")
    started = time.perf_counter()
    with torch.no_grad():  # scoped: main() is also called in-process (tests), where grad mode must survive it
        model, example = build(args.model, T=args.time_steps, batch_size=args.batch_size,
                               image_size=args.image_size, num_classes=args.num_classes, backend=args.backend,
                               seed=args.seed)
        report = profile(model, example)
    _progress(f"done in {time.perf_counter() - started:.1f} s")
    energy_models = (ConventionalEnergy(args.e_ac, args.e_mac),
                     UnifiedEnergy(args.e_ac, args.e_mac, args.e_mem, snn_weight_bits=args.snn_weight_bits,
                                   qann_bits=args.qann_bits, qann_bit_sparsity=args.qann_bit_sparsity))
    print(f"{args.model}: input {tuple(example.shape)}, random weights (seed {args.seed}) with batch-norm "
          f"statistics calibrated on random images; figures per sample")
    print(report.table(*energy_models))
    if args.csv:
        report.to_csv(args.csv)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report.to_dict(*energy_models), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
