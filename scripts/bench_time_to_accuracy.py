"""Benchmark: the shipped recipes over seeds, each whole `fit` command against one tutorial epoch.

The unit of time is one epoch of the plain tutorial loop the original project used, measured in the
same run: torchvision `FashionMNIST` + `ToTensor` + `DataLoader(batch_size=64, shuffle=True)`,
Adam at 1e-3, two 3x3 convolutions (32, 64), max-pooling and a 128-unit dense layer (on the GPU
when there is one, as PyTorch's quickstart does). Each recipe is then run at N seeds as a user runs
it, `python -m fashion_lightning fit --config RECIPE --seed_everything S`, in a fresh process
timed from outside, start to exit (start-up, fit and the final test on the official 10k test set).
Seeds follow `repeat`'s convention (the recipe's seed + k; the validation split stays); each
seed's test/acc and val/acc are read from its run folder by `runs`, and aggregated as `runs` does
(mean and sample std). The targets, on the mean over seeds:

    cnn_fast  >= 93.0%  whole command <= 1.3 tutorial epochs
    cnn       >= 94.0%  (the default: `fit` with no --config)      <= 6
    resnet    >= 94.5%                                             <= 25

It also prints the CPU and its flags (or the GPU), each recipe's training GFLOP per epoch (forward
+ backward, torch's FlopCounterMode), the GFLOP/s its fit reached (over the fit's own seconds,
from its status file) and the fraction of the device's peak (`hardware_peak.py`) where known.

    python scripts/bench_time_to_accuracy.py [--seeds 3] [--csv frontier.csv]
        [--precision 32-true] [--recipes cnn_fast cnn resnet] [--epochs resnet=3]
        [--data_dir DIR] [--logs DIR] [--extra --trainer.max_epochs=1 ...]   (--extra goes last)

Without the project installed, run it with PYTHONPATH=<repo root>.
"""

import argparse
import math
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from copy import deepcopy
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from bench_loader import torchvision_layout
from hardware_peak import Peak, describe, device_peak, read_cpu
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode
from torchvision import datasets, transforms

from fashion_lightning.cli.lightning import make_cli
from fashion_lightning.cli.recipes import recipe_names
from fashion_lightning.data import idx
from fashion_lightning.experiments.repeat import ACCURACIES, recipe_seeds
from fashion_lightning.experiments.runs import mean_std, read_run, write_table
from fashion_lightning.experiments.study import run_logger

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"cnn_fast": (0.93, 1.3), "cnn": (0.94, 6.0), "resnet": (0.945, 25.0)}  # acc, ratio
COLUMNS = (
    "recipe",
    "precision",
    "seed",
    "test_acc",
    "val_acc",
    "seconds",
    "tutorial_epoch_seconds",
    "ratio",
    "gflop_epoch",
    "gflops",
    "peak_gflops",
    "device",
    "epochs",
    "fit_seconds",
    "tutorial_test_acc",
)


def train_gflop_per_image(net: nn.Module) -> float:
    """Forward + backward GFLOP of one training image (optimizer step not counted), counted on a
    copy on the CPU, with the random state put back."""
    with torch.random.fork_rng():
        copy, x = deepcopy(net).cpu().train(), torch.randn(32, 1, 28, 28)
        with FlopCounterMode(display=False) as counter:
            copy(x).sum().backward()
    return counter.get_total_flops() / 32 / 1e9


class TutorialCNN(nn.Module):
    """Two 3x3 convolutions (32, 64), max-pooling, a 128-unit dense layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 32, 3), nn.Conv2d(32, 64, 3)
        self.fc1, self.fc2 = nn.Linear(64 * 12 * 12, 128), nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def tutorial_epoch(root: Path) -> tuple[float, float]:
    """One epoch of the tutorial loop in float32: (training seconds, test accuracy)."""
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    train = datasets.FashionMNIST(str(root), train=True, transform=transforms.ToTensor())
    test = datasets.FashionMNIST(str(root), train=False, transform=transforms.ToTensor())
    net = TutorialCNN().to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    start = time.perf_counter()
    for images, labels in DataLoader(train, batch_size=64, shuffle=True):
        loss = F.cross_entropy(net(images.to(device)), labels.to(device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        batches = DataLoader(test, 1000)
        correct = sum((net(x.to(device)).argmax(-1).cpu() == y).sum().item() for x, y in batches)
    print(
        f"Tutorial epoch ({device}, float32): {seconds:.1f} s, test acc {correct / len(test):.2%}"
    )
    return seconds, correct / len(test)


def timed_fit(args: list[str], run_dir: Path) -> float:
    """Seconds from start to exit of `python -m fashion_lightning fit ARGS` (its output goes to
    RUN_DIR.log), with this checkout first on the child's import path."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "fashion_lightning", "fit", *args, run_logger(run_dir)]
    path = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    log = run_dir.with_suffix(".log")
    start = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env, check=False)
    seconds = time.perf_counter() - start
    if done.returncode:
        tail = "\n".join(log.read_text().splitlines()[-20:])
        raise SystemExit(f"{shlex.join(command)}\nexited {done.returncode}:\n{tail}")
    return seconds


def run_recipe(name: str, fit_args: list[str], seeds: int, logs: Path) -> list[dict]:
    """The recipe's whole `fit` at each seed: one row per seed (no unit or peak yet)."""
    sys.argv = ["fashion_lightning"]
    base = make_cli(fit_args, run=False)  # the recipe as given: its seed, net and split
    gflop = train_gflop_per_image(base.model.net) * (60000 - base.datamodule.val_size)
    rows = []
    for seed in recipe_seeds(base.config, seeds):
        run_dir = logs / name / f"seed_{seed}"
        shutil.rmtree(run_dir, ignore_errors=True)  # a rerun into --logs measures afresh
        seconds = timed_fit([*fit_args, f"--seed_everything={seed}"], run_dir)
        run = read_run(run_dir, logs).row
        fit_seconds = run["fit_s"] or seconds
        rows.append(
            {
                "recipe": name,
                "precision": run["precision"],
                "seed": seed,
                "test_acc": run["test/acc"],
                "val_acc": run["val/acc"],
                "seconds": seconds,
                "gflop_epoch": gflop,
                "gflops": gflop * (run["epochs"] or 0) / fit_seconds,
                "epochs": run["epochs"],
                "fit_seconds": fit_seconds,
            }
        )
        accuracies = ", ".join(f"{m} {plus_minus(pd.Series([run[m]]), '.2%')}" for m in ACCURACIES)
        print(
            f"  {name} seed {seed}: {accuracies}; {seconds:.1f} s whole command "
            f"({run['precision']})",
            flush=True,
        )
    return rows


def with_device(table: pd.DataFrame, unit: float, tutorial_acc: float) -> dict[str, Peak]:
    """Fill the tutorial, ratio, peak and device columns in place; the peak of each precision."""
    peaks = {}
    for precision in table["precision"].unique():
        device, peaks[precision] = device_peak(precision)
        rows = table["precision"] == precision
        table.loc[rows, "peak_gflops"] = peaks[precision].gflops
        table.loc[rows, "device"] = device
    table["tutorial_epoch_seconds"] = unit
    table["tutorial_test_acc"] = tutorial_acc
    table["ratio"] = table["seconds"] / unit
    return peaks


def plus_minus(values: pd.Series, fmt: str) -> str:
    """`mean ± std` as `runs` computes them; the mean alone for one value, `-` for none (a fit
    cut short before its recipe's first validation has no val/acc)."""
    mean, std = mean_std(values)
    if math.isnan(mean):
        return "-"
    return f"{mean:{fmt}}" if math.isnan(std) else f"{mean:{fmt}} ± {std:{fmt}}"


def verdict(name: str, acc: float, ratio: float) -> str:
    if name not in TARGETS:
        return "-"
    acc_target, ratio_target = TARGETS[name]
    missed = [
        w for w, ok in (("acc", acc >= acc_target), ("time", ratio <= ratio_target)) if not ok
    ]
    result = f"missed ({', '.join(missed)})" if missed else "met"
    return f">= {acc_target:.1%} in {ratio_target:g}x: {result}"


def print_table(table: pd.DataFrame, unit: float, peaks: dict[str, Peak]) -> None:
    """One row per recipe and precision: means ± sample std over its seeds."""
    print(f"\nOne tutorial epoch (float32): {unit:.1f} s; whole `fit` command, start to exit")
    header = (
        "recipe | precision | seeds | test acc | val acc | whole command | tutorial epochs | "
        "GFLOP/epoch | GFLOP/s | peak GFLOP/s | of peak | target (on the mean)"
    )
    print(f"| {header} |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for (name, precision), group in table.groupby(["recipe", "precision"], sort=False):
        peak, gflops = peaks[precision].gflops, group["gflops"].mean()
        cells = [
            name,
            precision,
            str(len(group)),
            plus_minus(group["test_acc"], ".2%"),
            plus_minus(group["val_acc"], ".2%"),
            plus_minus(group["seconds"], ".1f") + " s",
            plus_minus(group["ratio"], ".2f") + "x",
            f"{group['gflop_epoch'].iloc[0]:,.0f}",
            f"{gflops:,.0f}",
            f"{peak:,.0f}" if peak else "unknown",
            f"{gflops / peak:.1%}" if peak else "-",
            verdict(name, group["test_acc"].mean(), group["ratio"].mean()),
        ]
        print("| " + " | ".join(cells) + " |")
    for precision, peak in peaks.items():
        print(f"Peak for {precision}: {peak.how}")


def fit_options(options: argparse.Namespace, name: str, data_dir: Path) -> list[str]:
    """The fit options of one recipe: the recipe, the data, the precision, the cut, the extras."""
    cut = dict(item.split("=") for item in options.epochs)
    args = [
        f"--config={name}",
        f"--data.data_dir={data_dir}",
        "--trainer.enable_progress_bar=false",
    ]
    args += [f"--trainer.precision={options.precision}"] if options.precision else []
    args += [f"--trainer.max_epochs={cut[name]}"] if name in cut else []
    return args + [a for item in options.extra for a in shlex.split(item) if a != "--extra"]


def parse_options(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds per recipe (repeat's)")
    parser.add_argument("--csv", type=Path, help="also write one row per recipe and seed here")
    parser.add_argument("--precision", default=None, help="e.g. 32-true (default: the hardware's)")
    parser.add_argument("--recipes", nargs="+", default=list(TARGETS), choices=recipe_names())
    parser.add_argument("--epochs", nargs="*", default=[], help="cut recipes short: NAME=EPOCHS")
    parser.add_argument("--data_dir", type=Path, help="the four IDX files (default: found)")
    parser.add_argument("--logs", type=Path, help="keep the run folders here (default: deleted)")
    parser.add_argument(
        "--extra",
        nargs=argparse.REMAINDER,
        action="extend",
        default=[],
        help="fit options for every fit, e.g. --extra --trainer.max_epochs=1 (give it last)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    options = parse_options(argv)
    data_dir = idx.find_data_dir(options.data_dir, download=False).resolve()
    print(f"CPU: {describe(read_cpu())}", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        unit, tutorial_acc = tutorial_epoch(torchvision_layout(data_dir, Path(scratch) / "tv"))
        logs = (options.logs or Path(scratch) / "logs").resolve()
        rows = []
        for name in options.recipes:
            fit_args = fit_options(options, name, data_dir)
            rows += run_recipe(name, fit_args, options.seeds, logs / (options.precision or "auto"))
    table = pd.DataFrame(rows)
    peaks = with_device(table, unit, tutorial_acc)
    table = table[list(COLUMNS)]
    print_table(table, unit, peaks)
    if options.csv:
        write_table(table, options.csv)
    return table


if __name__ == "__main__":
    main()
