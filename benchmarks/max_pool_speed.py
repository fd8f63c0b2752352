"""ATen's CPU max-pool against spikeops' index-free kernels (spikeops.ops.max_pool) on QKFormer's SPEDS pool
shapes (3x3, stride 2, padding 1): forward (values) and the recompute backward (argmax + gradient; ATen:
max_pool2d_with_indices then max_pool2d_with_indices_backward). Both sides run interleaved in one process and
the medians are reported, so load from other processes hits both alike.

    PYTHONPATH=. python -m benchmarks.max_pool_speed [--rounds 21] [--dtype float32] [--threads N]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from spikeops.ops.max_pool import max_pool2d_recompute_backward, max_pool2d_values

SHAPES = [(8, 48, 64, 64), (8, 96, 32, 32), (8, 192, 16, 16), (4, 48, 64, 64), (4, 96, 32, 32), (4, 192, 16, 16)]
POOL = ([3, 3], [2, 2], [1, 1], [1, 1], False)


def _aten_backward(grad, x):
    _, indices = torch.ops.aten.max_pool2d_with_indices(x, *POOL)
    return torch.ops.aten.max_pool2d_with_indices_backward(grad, x, *POOL, indices)


def _interleaved_medians(fns: dict, rounds: int) -> dict:
    times = {name: [] for name in fns}
    for fn in fns.values():  # warm-up
        fn()
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    print(f"threads {torch.get_num_threads()}, {args.dtype}, medians of {args.rounds} interleaved rounds (ms)")
    print("| shape | fwd ATen | fwd spikeops | speed-up | bwd ATen | bwd spikeops | speed-up |")
    print("|---|---|---|---|---|---|---|")
    for shape in SHAPES:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(shape, generator=g, dtype=dtype)
        grad = torch.randn(torch.ops.aten.max_pool2d(x, *POOL).shape, generator=g, dtype=dtype)
        m = _interleaved_medians({
            "fwd_aten": lambda: torch.ops.aten.max_pool2d(x, *POOL),
            "fwd_ours": lambda: max_pool2d_values(x, *POOL),
            "bwd_aten": lambda: _aten_backward(grad, x),
            "bwd_ours": lambda: max_pool2d_recompute_backward(grad, x, *POOL),
        }, args.rounds)
        print(f"| {list(shape)} | {m['fwd_aten']:.3f} | {m['fwd_ours']:.3f} | {m['fwd_aten'] / m['fwd_ours']:.1f}x "
              f"| {m['bwd_aten']:.3f} | {m['bwd_ours']:.3f} | {m['bwd_aten'] / m['bwd_ours']:.1f}x |")


if __name__ == "__main__":
    main()
