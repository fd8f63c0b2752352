"""``python -m spikeops.energy MODEL_NAME``: the energy table of a backbone (random weights, small input).

    python -m spikeops.energy --list
    python -m spikeops.energy qkformer_hst_4_384 -T 4 --csv layers.csv
    python -m spikeops.energy spikingjelly:sdt_8_384 --image-size 64 --qann-bits 4
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

from .energy_models import ConventionalEnergy, UnifiedEnergy
from .profiler import profile
from .zoo import available_models, build


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m spikeops.energy", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", nargs="?", help="backbone name (see --list)")
    p.add_argument("--list", action="store_true", help="list the backbone names and exit")
    p.add_argument("-T", "--time-steps", type=int, default=4)
    p.add_argument("--image-size", type=int, default=None, help="input height = width (default: per model)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--backend", default="torch", help="spikeops backend for spikeops.models backbones")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--e-ac", type=float, default=0.9, help="pJ per accumulate")
    p.add_argument("--e-mac", type=float, default=4.6, help="pJ per multiply-accumulate")
    p.add_argument("--e-mem", type=float, default=3.12, help="pJ per memory access of one word (unified model)")
    p.add_argument("--snn-weight-bits", type=int, default=32)
    p.add_argument("--qann-bits", type=int, default=8)
    p.add_argument("--qann-bit-sparsity", type=float, default=0.5)
    p.add_argument("--csv", metavar="PATH", help="also write the per-layer table as CSV")
    p.add_argument("--json", metavar="PATH", help="also write the whole profile as JSON")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.list or not args.model:
        names = sorted(available_models())
        print("\n".join(names) if names else "no backbones available (spikeops.models / spikingjelly missing)")
        return 0 if args.list else 2
    with torch.no_grad():  # scoped: main() is also called in-process (tests), where grad mode must survive it
        model, example = build(args.model, T=args.time_steps, batch_size=args.batch_size,
                               image_size=args.image_size, num_classes=args.num_classes, backend=args.backend,
                               seed=args.seed)
        report = profile(model, example)
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
