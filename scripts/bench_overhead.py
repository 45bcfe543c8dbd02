"""Benchmark: the shipped Lightning fit loop vs a plain PyTorch loop, same MLP, batches and steps.

Lightning runs exactly as `python -m fashion_lightning fit --config configs/mlp.yaml` does
(TensorBoard logging, progress bar, checkpointing, LR monitor, images), float32, with a callback
that times the training steps of each epoch (first batch start to last batch end; validation is
outside). The plain loop draws the same batches from its own DataModule, normalizes them the same
way, and takes the same optimizer and learning-rate-schedule steps on its own copy of the network.

Two more Lightning fits say where the difference comes from, each against its own plain epochs:
the shipped fit without its fault-tolerance callbacks (`LastCheckpoint`, `EpochEndLastCheckpoint`,
`ExactResume`, `FiniteLoss`: what they cost), and Lightning's textbook loop as its docs show it
(a module whose `training_step` logs the loss with `self.log` and returns it, a `Trainer` with its
defaults: a TensorBoard logger, the progress bar, a checkpoint each epoch; none of the project's
callbacks): what Lightning itself costs. The target is the shipped fit at most 1.05x the textbook
loop at batch 256: what the project's callbacks, metrics and logging add.

Each Lightning epoch is paired with a plain one: before it (outside its timed steps) the plain
loop runs one epoch, and each pair gives a ratio Lightning / plain. This shared machine's speed
drifts by tens of percent over a minute; measured in turn, a slow minute lands on both sides of a
pair rather than on one loop only. Reported: seconds per epoch (median of the epochs after the
first) and the median of the pairs' ratios after the first, at batch 256 and 64.

    python scripts/bench_overhead.py [--epochs 4] [--csv docs/measurements/overhead.csv]

More epochs give more pairs, so a tighter median on a machine whose speed drifts.
"""

import argparse
import csv
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from hardware_peak import describe, read_cpu

from fashion_lightning.cli.lightning import make_cli
from fashion_lightning.data.datamodule import Batch, FashionMNISTDataModule
from fashion_lightning.training.module import ClassifierModule, WarmupDecay
from fashion_lightning.training.resilience import (
    EpochEndLastCheckpoint,
    ExactResume,
    FiniteLoss,
    LastCheckpoint,
)

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "mlp.yaml"
EPOCHS = 4
FAULT_TOLERANCE = (LastCheckpoint, EpochEndLastCheckpoint, ExactResume, FiniteLoss)
VARIANTS = ("shipped", "without fault tolerance", "textbook Lightning")


class PlainLoop:
    """The same network, optimizer and learning-rate schedule as the config, in a plain loop."""

    def __init__(self, batch_size: int, epochs: int = EPOCHS) -> None:
        sys.argv = ["fashion_lightning"]
        self.model = make_cli([f"--config={CONFIG}"], run=False).model
        self.dm = FashionMNISTDataModule(batch_size=batch_size)
        self.dm.setup("fit")
        steps = epochs * len(self.dm.train_dataloader())
        self.optimizer = self.model.make_optimizer(self.model.net.parameters())
        schedule = WarmupDecay(
            steps, round(self.model.warmup_fraction * steps), self.model.lr_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)

    def epoch(self) -> float:
        """Seconds for one epoch of training steps."""
        start = time.perf_counter()
        with torch.enable_grad():
            for images, labels, _ in self.dm.train_dataloader():
                loss = F.cross_entropy(self.model.net(self.dm.transform(images)), labels)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                self.scheduler.step()
        return time.perf_counter() - start


class TextbookModule(L.LightningModule):
    """Lightning's textbook loop over the recipe's network, optimizer and schedule:
    `training_step` logs the loss and returns it, and Lightning steps the optimizer."""

    def __init__(self, recipe: ClassifierModule) -> None:
        super().__init__()
        self.recipe = recipe  # a child module: Lightning attaches the Trainer to it too

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        images, labels, _ = batch
        loss = F.cross_entropy(self.recipe.net(images), labels)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return self.recipe.configure_optimizers()


class PairedTimer(L.Callback):
    """Runs a plain epoch before each Lightning epoch; records (plain, Lightning) seconds."""

    def __init__(self, plain: PlainLoop) -> None:
        self.plain = plain
        self.pairs: list[tuple[float, float]] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.plain_seconds = self.plain.epoch()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == trainer.num_training_batches - 1:
            self.pairs.append((self.plain_seconds, time.perf_counter() - self.start))


def lightning_fit(
    args: list[str], folder: str, variant: str = "shipped"
) -> tuple[L.Trainer, L.LightningModule, L.LightningDataModule]:
    """The Trainer, module and data of one of `VARIANTS`, built by the CLI from `args`; the
    textbook Trainer logs and checkpoints into `folder`."""
    sys.argv = ["fashion_lightning"]
    cli = make_cli(args, run=False)
    trainer, model = cli.trainer, cli.model
    if variant == "without fault tolerance":
        trainer.callbacks[:] = [c for c in trainer.callbacks if not isinstance(c, FAULT_TOLERANCE)]
    elif variant == "textbook Lightning":
        trainer = L.Trainer(
            max_epochs=trainer.max_epochs,
            precision=trainer.precision,
            default_root_dir=folder,
            log_every_n_steps=trainer.log_every_n_steps,  # as often as the shipped fit
            logger=L.pytorch.loggers.TensorBoardLogger(folder, name="textbook"),
        )
        model = TextbookModule(model)
    return trainer, model, cli.datamodule


def paired_epochs(
    batch_size: int, folder: str, epochs: int = EPOCHS, variant: str = "shipped"
) -> list[tuple[float, float]]:
    """(plain, Lightning) seconds of each epoch after the first, for one of `VARIANTS`."""
    timer = PairedTimer(PlainLoop(batch_size, epochs))
    args = [
        f"--config={CONFIG}",
        f"--data.batch_size={batch_size}",
        f"--trainer.max_epochs={epochs}",
        f"--trainer.logger.init_args.save_dir={folder}",
        "--trainer.precision=32-true",
    ]  # as the plain loop, on any CPU
    trainer, model, data = lightning_fit(args, folder, variant)
    trainer.callbacks.append(timer)
    trainer.fit(model, data)
    return timer.pairs[1:]


HEADER = (
    "batch",
    "plain loop s/epoch",
    "Lightning as shipped s/epoch",
    "shipped / plain",
    "without fault tolerance / plain",
    "textbook Lightning / plain",
    "shipped / textbook (<= 1.05 at 256)",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="epochs of each loop (>= 2)")
    parser.add_argument("--csv", type=Path, help="also write the table to this CSV")
    options = parser.parse_args()
    epochs = max(options.epochs, 2)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for batch_size in (256, 64):
            ratios, seconds = [], []
            for variant in VARIANTS:
                pairs = paired_epochs(batch_size, folder, epochs, variant)
                ratios.append(statistics.median(light / plain for plain, light in pairs))
                seconds.append(tuple(statistics.median(side) for side in zip(*pairs)))
            plain, shipped = seconds[0]
            cells = [f"{ratio:.2f}" for ratio in (*ratios, ratios[0] / ratios[-1])]
            rows.append([str(batch_size), f"{plain:.3f}", f"{shipped:.3f}", *cells])
    print(f"\nCPU: {describe(read_cpu())}; float32")
    print(
        f"MLP 784-256-128-10, {epochs} epochs each, alternating (medians of the last "
        f"{epochs - 1}); each Lightning fit against its own plain epochs"
    )
    print("| " + " | ".join(HEADER) + " |\n|" + "---:|" * len(HEADER))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if options.csv:
        with options.csv.open("w", newline="") as f:
            csv.writer(f, lineterminator="\n").writerows([HEADER, *rows])


if __name__ == "__main__":
    main()
