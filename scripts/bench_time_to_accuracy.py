"""Benchmark: fit time to 91% and 92% test accuracy, the shipped fast CNN vs the tutorial loop.

Ours: `configs/cnn_fast.yaml` through the project's CLI classes (the real Lightning fit, logging and
checkpointing on). Baseline: the plain tutorial loop the original project used: torchvision
`FashionMNIST` + `ToTensor` + `DataLoader(batch_size=64, shuffle=True)`, Adam at 1e-3, and a CNN of
two 3x3 convolutions (32 and 64 channels), max-pooling and a 128-unit dense layer.

After every epoch the clock stops while the official 10k test set is scored, so reported times are
pure training time. The baseline runs until it reaches 91% or `--baseline-epochs` epochs.

    python scripts/bench_time_to_accuracy.py [--baseline-epochs 8]
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from bench_loader import torchvision_layout
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from fashion_lightning import idx
from fashion_lightning.__main__ import make_cli

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "cnn_fast.yaml"
THRESHOLDS = (0.91, 0.92)


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
            for images, labels in datamodule.test_dataloader():
                correct += (
                    (pl_module(datamodule.transform(images)).argmax(-1) == labels).sum().item()
                )
        pl_module.train(training)
        return correct / len(datamodule.splits["test"][1])


def ours(folder: str) -> list[tuple[float, float]]:
    sys.argv = ["fashion_lightning"]
    args = [f"--config={CONFIG}", f"--trainer.logger.init_args.save_dir={folder}",
            "--trainer.enable_progress_bar=false"]  # fmt: skip
    cli = make_cli(args, run=False)
    clock = TestClock()
    cli.trainer.callbacks.append(clock)
    cli.trainer.fit(cli.model, cli.datamodule)
    return clock.curve


class TutorialCNN(nn.Module):
    """Two 3x3 convolutions (32, 64), max-pooling, a 128-unit dense layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 32, 3), nn.Conv2d(32, 64, 3)
        self.fc1, self.fc2 = nn.Linear(64 * 12 * 12, 128), nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def tutorial(root: Path, max_epochs: int) -> list[tuple[float, float]]:
    torch.manual_seed(0)
    train = datasets.FashionMNIST(str(root), train=True, transform=transforms.ToTensor())
    test = datasets.FashionMNIST(str(root), train=False, transform=transforms.ToTensor())
    loader = DataLoader(train, batch_size=64, shuffle=True)
    net = TutorialCNN()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    curve, elapsed = [], 0.0
    for _ in range(max_epochs):
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
        print(
            f"  tutorial epoch {len(curve)}: {elapsed:.0f} s, test acc {curve[-1][1]:.2%}",
            flush=True,
        )
        if curve[-1][1] >= THRESHOLDS[0]:
            break
    return curve


def time_to(curve: list[tuple[float, float]], threshold: float) -> float | None:
    return next((seconds for seconds, acc in curve if acc >= threshold), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline-epochs", type=int, default=8)
    baseline_epochs = parser.parse_args().baseline_epochs
    with tempfile.TemporaryDirectory() as folder:
        fast = ours(folder)
        for epoch, (seconds, acc) in enumerate(fast, 1):
            print(f"  cnn_fast epoch {epoch}: {seconds:.1f} s, test acc {acc:.2%}", flush=True)
        root = torchvision_layout(idx.find_data_dir(download=False), Path(folder) / "tv")
        slow = tutorial(root, baseline_epochs)
    print(f"\nFit time to test accuracy, {torch.get_num_threads()} CPU threads")
    print("| run | epochs | final test acc | time to 91% | time to 92% |")
    print("|---|---:|---:|---:|---:|")
    for name, curve in (("configs/cnn_fast.yaml", fast), ("tutorial loop", slow)):
        cells = [f"{t:.1f} s" if (t := time_to(curve, th)) else "not reached" for th in THRESHOLDS]
        print(f"| {name} | {len(curve)} | {curve[-1][1]:.2%} | {cells[0]} | {cells[1]} |")
    ours_91, theirs_91 = time_to(fast, 0.91), time_to(slow, 0.91)
    if ours_91 and theirs_91:
        print(f"\nTo 91%: {theirs_91 / ours_91:.1f}x less time than the tutorial loop")
    elif ours_91:
        print(f"\nTo 91%: the tutorial loop did not get there in {slow[-1][0]:.0f} s "
              f"(more than {slow[-1][0] / ours_91:.1f}x our time)")  # fmt: skip


if __name__ == "__main__":
    main()
