"""Benchmark: the shipped Lightning fit loop vs a plain PyTorch loop, same MLP, batches and steps.

Lightning runs exactly as `python -m fashion_lightning fit --config configs/mlp.yaml` does
(TensorBoard logging, progress bar, checkpointing, LR monitor, images), with a callback that times
the training steps of each epoch (first batch start to last batch end; validation is outside).
The plain loop draws the same batches from the same DataModule, normalizes them the same way, and
takes the same optimizer and learning-rate-schedule steps on the same network. Reported: seconds
per epoch (median of the epochs after the first) and the ratio Lightning / plain, at batch 256, 64.

    python scripts/bench_overhead.py
"""

import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

from fashion_lightning.data import FashionMNISTDataModule
from fashion_lightning.lightning_cli import make_cli
from fashion_lightning.module import WarmupDecay

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "mlp.yaml"
EPOCHS = 4


class StepTimer(L.Callback):
    """Seconds from each epoch's first training batch to its last."""

    def __init__(self) -> None:
        self.epochs: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == trainer.num_training_batches - 1:
            self.epochs.append(time.perf_counter() - self.start)


def lightning_epoch(batch_size: int, folder: str) -> float:
    args = [
        f"--config={CONFIG}",
        f"--data.batch_size={batch_size}",
        f"--trainer.max_epochs={EPOCHS}",
        f"--trainer.logger.init_args.save_dir={folder}",
        "--trainer.precision=32-true",
    ]  # as the plain loop, on any CPU
    sys.argv = ["fashion_lightning"]
    cli = make_cli(args, run=False)
    timer = StepTimer()
    cli.trainer.callbacks.append(timer)
    cli.trainer.fit(cli.model, cli.datamodule)
    return statistics.median(timer.epochs[1:])


def plain_epoch(batch_size: int) -> float:
    """The same network, optimizer and learning-rate schedule as the config, in a plain loop."""
    sys.argv = ["fashion_lightning"]
    model = make_cli([f"--config={CONFIG}"], run=False).model
    dm = FashionMNISTDataModule(batch_size=batch_size)
    dm.setup("fit")
    steps = EPOCHS * len(dm.train_dataloader())
    optimizer = model.make_optimizer(model.net.parameters())
    schedule = WarmupDecay(steps, round(model.warmup_fraction * steps), model.lr_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    times = []
    for _ in range(EPOCHS):
        start = time.perf_counter()
        for images, labels, _ in dm.train_dataloader():
            loss = F.cross_entropy(model.net(dm.transform(images)), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for batch_size in (256, 64):
            plain = plain_epoch(batch_size)
            lightning = lightning_epoch(batch_size, folder)
            rows.append((batch_size, plain, lightning))
    print(
        f"\nMLP 784-256-128-10, {EPOCHS} epochs (median of the last {EPOCHS - 1}), "
        f"{torch.get_num_threads()} threads"
    )
    print("| batch | plain loop s/epoch | Lightning as shipped s/epoch | Lightning / plain |")
    print("|------:|-------------------:|-----------------------------:|------------------:|")
    for batch_size, plain, lightning in rows:
        print(
            f"| {batch_size:5d} | {plain:18.3f} | {lightning:28.3f} | {lightning / plain:16.2f}x |"
        )


if __name__ == "__main__":
    main()
