"""The project's callbacks that need no fitted run: the throttled progress bar."""

import lightning as L
import pytest
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.demos.boring_classes import BoringModel

from fashion_lightning.callbacks import ProgressBar


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
    bar = ProgressBar(interval=interval)
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
