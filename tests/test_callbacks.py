"""The progress bar the project trains with."""

import re

import lightning as L
import pytest
from conftest import config
from lightning.pytorch.callbacks import Callback, TQDMProgressBar
from lightning.pytorch.demos.boring_classes import BoringModel

from fashion_lightning.cli.lightning import make_cli
from fashion_lightning.training.callbacks import ProgressBar


@pytest.mark.parametrize(("interval", "drawn"), [(3600.0, [0, 4, 4]), (0.0, [0, 1, 2, 3, 4] * 2)])
def test_the_training_bar_redraws_by_time_and_at_each_epochs_end(
    interval: float, drawn: list[int], monkeypatch, tmp_path
) -> None:
    redraws: list[int] = []
    lightnings = TQDMProgressBar.on_train_batch_end

    def record(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        redraws.append(batch_idx)
        lightnings(self, trainer, pl_module, outputs, batch, batch_idx)

    monkeypatch.setattr(TQDMProgressBar, "on_train_batch_end", record)
    bar = ProgressBar(interval=interval, lines=False)  # the bars, as in a terminal
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        callbacks=[bar],
        max_epochs=2,
        limit_train_batches=5,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.fit(BoringModel())
    assert redraws == drawn
    assert bar.train_progress_bar.n == 5  # the last batch is always shown


class BarAtEpochEnd(Callback):
    """What the bar and Lightning's progress-bar metrics hold at the end of a training epoch."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.postfix = trainer.progress_bar_callback.train_progress_bar.postfix
        self.metrics = dict(trainer.progress_bar_metrics)


def test_the_bar_shows_the_training_loss_that_lightning_does_not_read_every_step(
    tiny_args: list[str],
) -> None:
    options = [*tiny_args, "--trainer.enable_progress_bar=true", "--trainer.max_epochs=1"]
    cli = make_cli([config("mlp"), *options], run=False)
    seen = BarAtEpochEnd()
    cli.trainer.callbacks.append(seen)
    cli.trainer.fit(cli.model, cli.datamodule)
    assert isinstance(cli.trainer.progress_bar_callback, ProgressBar)
    assert "train/loss" not in seen.metrics  # so Lightning does not read it at every step
    shown = re.search(r"train/loss=([0-9.]+)", seen.postfix)
    assert shown and 0 < float(shown[1]) < 10
