"""Benchmark: Muon's Newton-Schulz orthogonalization for one step of each shipped Muon recipe, in
bfloat16 (what torch's Muon always runs) and in float32, timed in the same run on this machine.

FlatMuon picks float32 on a CPU without bfloat16 units, where bf16 is emulated, and bfloat16
everywhere else (`fashion_lightning/optim/muon.py`); this is the measurement behind that choice.
The matrices are the recipe's Muon weights seen as Muon sees them, with random gradients.

    python scripts/bench_muon.py [--repeats 9]
"""

import argparse
import logging
import statistics
import sys
import time

import torch
from hardware_peak import describe, read_cpu

from fashion_lightning.cli.lightning import make_cli
from fashion_lightning.optim.build import muon_weights
from fashion_lightning.optim.muon import as_matrix, newton_schulz, newton_schulz_dtype

RECIPES = ("cnn_fast", "cnn", "resnet")


def recipe_gradients(name: str) -> list[torch.Tensor]:
    """Random gradients shaped as the recipe's Muon weights, as (O, rest) matrices."""
    sys.argv = ["fashion_lightning"]
    net = make_cli([f"--config={name}"], run=False).model.net
    generator = torch.Generator().manual_seed(0)
    weights = muon_weights(list(net.named_parameters()))
    return [as_matrix(torch.randn(w.shape, generator=generator), w) for w in weights]


def step_seconds(grads: list[torch.Tensor], dtype: torch.dtype, repeats: int) -> float:
    """The median time of orthogonalizing every gradient once, after one warm-up."""
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        for grad in grads:
            newton_schulz(grad, dtype=dtype)  # torch Muon's coefficients, steps and eps
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=9, help="timed steps per setting")
    args = parser.parse_args()
    for name in ("lightning.pytorch", "lightning.fabric"):  # the Trainer's and the seed's banners
        logging.getLogger(name).setLevel(logging.WARNING)
    print(f"CPU: {describe(read_cpu())}")
    print(f"FlatMuon orthogonalizes in {newton_schulz_dtype('cpu')} on this CPU\n")
    print("| recipe | Muon matrices | bfloat16 (torch), ms/step | float32, ms/step | bf16 / fp32 |")
    print("|---|---:|---:|---:|---:|")
    for name in RECIPES:
        grads = recipe_gradients(name)
        bf16, fp32 = (step_seconds(grads, d, args.repeats) for d in (torch.bfloat16, torch.float32))
        print(
            f"| {name} | {len(grads)} | {bf16 * 1e3:.1f} | {fp32 * 1e3:.1f} | {bf16 / fp32:.1f}x |"
        )


if __name__ == "__main__":
    main()
