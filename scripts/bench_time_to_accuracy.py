"""Benchmark: the shipped recipes against one epoch of the tutorial loop, on this machine.

The unit of time is one epoch of the plain tutorial loop the original project used, measured in the
same process: torchvision `FashionMNIST` + `ToTensor` + `DataLoader(batch_size=64, shuffle=True)`,
Adam at 1e-3, two 3x3 convolutions (32, 64), max-pooling and a 128-unit dense layer. Each recipe
is a real `fit` through the project's CLI classes (logging and checkpointing on), followed by its
test on the official 10k test set; its fit time and fit + test time are reported as multiples of
that epoch, beside the targets of the issue "Speed and accuracy on every machine":

    configs/cnn_fast.yaml  >= 92.0%  fit        <= 1.3 tutorial epochs
    configs/cnn.yaml       >= 93.0%  fit + test <= 6
    configs/resnet.yaml    >= 94.5%  fit        <= 25

After every epoch the clock stops while the test set is scored (the time-to-accuracy columns).
It prints the CPU and the flags that decide its speed, the precision of each run (by default the
one the hardware picks; `--precision 32-true` shows the float32 picture on any machine), and each
recipe's training GFLOP per epoch (forward + backward, counted by torch's FlopCounterMode) and the
GFLOP/s it achieved.

    python scripts/bench_time_to_accuracy.py [--precision 32-true] [--recipes cnn_fast cnn resnet]
        [--epochs resnet=3]   # cut a recipe short: its time ratio is then per epoch run
"""

import argparse
import platform
import sys
import tempfile
import time
from copy import deepcopy
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from bench_loader import torchvision_layout
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode
from torchvision import datasets, transforms

from fashion_lightning import idx
from fashion_lightning.lightning_cli import make_cli

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TARGETS = {  # recipe: (accuracy, tutorial epochs, what the time covers)
    "cnn_fast": (0.92, 1.3, "fit"),
    "cnn": (0.93, 6.0, "fit + test"),
    "resnet": (0.945, 25.0, "fit"),
}
THRESHOLDS = (0.91, 0.92, 0.93, 0.945)
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_description() -> str:
    """The CPU model and the instruction-set flags that decide fp32 and bf16 speed."""
    model, flags = platform.processor() or platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    present = [f for f in CPU_FLAGS if f in flags] or ["(flags unknown)"]
    return f"{model}; {torch.get_num_threads()} threads; flags: {' '.join(present)}"


def train_gflop_per_image(net: nn.Module) -> float:
    """Forward + backward GFLOP of one training image (optimizer step not counted), counted on a
    copy and with the random state put back, so the fit that follows is exactly `fit`'s."""
    with torch.random.fork_rng():
        copy, x = deepcopy(net).train(), torch.randn(32, 1, 28, 28)
        with FlopCounterMode(display=False) as counter:
            copy(x).sum().backward()
    return counter.get_total_flops() / 32 / 1e9


class TestClock(L.Callback):
    """Training time (test scoring excluded) and test accuracy at the end of every epoch."""

    def __init__(self) -> None:
        self.curve: list[tuple[float, float]] = []

    def on_train_start(self, trainer, pl_module) -> None:
        self.start, self.paused = time.perf_counter(), 0.0

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        now = time.perf_counter()
        self.curve.append((now - self.start - self.paused, self.test_accuracy(trainer, pl_module)))
        self.paused += time.perf_counter() - now

    @staticmethod
    @torch.no_grad()
    def test_accuracy(trainer, pl_module) -> float:
        datamodule, training = trainer.datamodule, pl_module.training
        pl_module.eval()
        correct = 0
        with trainer.precision_plugin.forward_context():
            for images, labels, _ in datamodule.test_dataloader():
                logits = pl_module(datamodule.transform(images.to(pl_module.device)))
                correct += (logits.argmax(-1).cpu() == labels).sum().item()
        pl_module.train(training)
        return correct / len(datamodule.splits["test"][1])


def run_recipe(name: str, folder: str, precision: str | None, epochs: int | None) -> dict:
    """Fit the recipe, then test its best checkpoint as `fit` does; times and accuracies."""
    sys.argv = ["fashion_lightning"]
    args = [
        f"--config={CONFIGS / name}.yaml",
        f"--trainer.logger.init_args.save_dir={folder}",
        "--trainer.enable_progress_bar=false",
    ]
    args += [f"--trainer.precision={precision}"] if precision else []
    args += [f"--trainer.max_epochs={epochs}"] if epochs else []
    cli = make_cli(args, run=False)
    gflop = train_gflop_per_image(cli.model.net) * (60000 - cli.datamodule.val_size)
    clock = TestClock()
    cli.trainer.callbacks.append(clock)
    cli.trainer.fit(cli.model, cli.datamodule)
    fit_seconds = clock.curve[-1][0]
    start = time.perf_counter()
    cli.after_fit()  # the final test, exactly as `fit` runs it
    test_seconds = time.perf_counter() - start
    acc = cli.trainer.callback_metrics["test/acc"].item()
    return {
        "name": name,
        "precision": str(cli.trainer.precision),
        "curve": clock.curve,
        "fit": fit_seconds,
        "test": test_seconds,
        "acc": acc,
        "gflop_epoch": gflop,
        "gflops": gflop * len(clock.curve) / fit_seconds,
    }


class TutorialCNN(nn.Module):
    """Two 3x3 convolutions (32, 64), max-pooling, a 128-unit dense layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 32, 3), nn.Conv2d(32, 64, 3)
        self.fc1, self.fc2 = nn.Linear(64 * 12 * 12, 128), nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def tutorial(root: Path, epochs: int) -> list[tuple[float, float]]:
    """The tutorial loop in float32: (cumulative training seconds, test accuracy) per epoch."""
    torch.manual_seed(0)
    train = datasets.FashionMNIST(str(root), train=True, transform=transforms.ToTensor())
    test = datasets.FashionMNIST(str(root), train=False, transform=transforms.ToTensor())
    loader = DataLoader(train, batch_size=64, shuffle=True)
    net = TutorialCNN()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    curve, elapsed = [], 0.0
    for _ in range(epochs):
        start = time.perf_counter()
        for images, labels in loader:
            loss = F.cross_entropy(net(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        elapsed += time.perf_counter() - start
        with torch.no_grad():
            correct = sum((net(x).argmax(-1) == y).sum().item() for x, y in DataLoader(test, 1000))
        curve.append((elapsed, correct / len(test)))
        print(f"  tutorial epoch {len(curve)}: {elapsed:.1f} s, test acc {curve[-1][1]:.2%}")
    return curve


def time_to(curve: list[tuple[float, float]], threshold: float) -> str:
    seconds = next((s for s, acc in curve if acc >= threshold), None)
    return f"{seconds:.0f} s" if seconds is not None else "-"


def print_table(runs: list[dict], unit: float, tutorial_gflop: float) -> None:
    print(f"\nOne tutorial epoch (float32): {unit:.1f} s, {tutorial_gflop / unit:.0f} GFLOP/s")
    header = [
        "recipe",
        "precision",
        "epochs",
        "GFLOP/epoch",
        "GFLOP/s",
        "fit",
        "fit + test",
        "test acc",
        "time (tutorial epochs)",
        "target",
    ]
    header += [f"to {t:.1%}" for t in THRESHOLDS]
    print("| " + " | ".join(header) + " |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|" + "---:|" * len(THRESHOLDS))
    for r in runs:
        acc_target, time_target, covers = TARGETS[r["name"]]
        seconds = r["fit"] + (r["test"] if covers == "fit + test" else 0.0)
        met = "met" if r["acc"] >= acc_target and seconds / unit <= time_target else "NOT met"
        cells = [
            f"configs/{r['name']}.yaml",
            r["precision"],
            str(len(r["curve"])),
            f"{r['gflop_epoch']:.0f}",
            f"{r['gflops']:.0f}",
            f"{r['fit']:.1f} s",
            f"{r['fit'] + r['test']:.1f} s",
            f"{r['acc']:.2%}",
            f"{seconds / unit:.2f}x",
            f">= {acc_target:.1%} in {time_target:g}x ({covers}): {met}",
            *(time_to(r["curve"], t) for t in THRESHOLDS),
        ]
        print("| " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--precision", default=None, help="e.g. 32-true (default: the hardware's)")
    parser.add_argument("--recipes", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    parser.add_argument("--epochs", nargs="*", default=[], help="cut recipes short: NAME=EPOCHS")
    parser.add_argument("--tutorial-epochs", type=int, default=1)
    options = parser.parse_args()
    cut = {k: int(v) for k, v in (item.split("=") for item in options.epochs)}
    print(f"CPU: {cpu_description()}", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        root = torchvision_layout(idx.find_data_dir(download=False), Path(folder) / "tv")
        baseline = tutorial(root, options.tutorial_epochs)
        runs = []
        for name in options.recipes:
            runs.append(run_recipe(name, folder, options.precision, cut.get(name)))
            r = runs[-1]
            print(
                f"  {name}: {r['acc']:.2%} in {r['fit']:.1f} s fit + {r['test']:.1f} s test "
                f"({r['precision']})",
                flush=True,
            )
    unit = baseline[0][0]
    print(f"\nCPU: {cpu_description()}")
    print_table(runs, unit, train_gflop_per_image(TutorialCNN()) * 60000)


if __name__ == "__main__":
    main()
