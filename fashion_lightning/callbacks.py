"""Lightning callbacks of the project: what gets written to disk besides Lightning's own logs."""

import os
from pathlib import Path

import pandas as pd
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from fashion_lightning.idx import CLASS_NAMES


class PredictionWriter(BasePredictionWriter):
    """Writes `predictions.csv` into the run's log folder after `predict`: one row per image with
    its index in the predicted split, true label, predicted class, confidence and all class
    probabilities. Under DDP each rank writes `predictions_rank<R>.csv` for the images it saw."""

    def __init__(self) -> None:
        super().__init__(write_interval="epoch")

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        loader = trainer.predict_dataloaders
        indices = loader.sample_indices()
        probs = torch.cat([p["probs"] for p in predictions]).float().cpu()
        table = pd.DataFrame(probs.numpy(), columns=list(CLASS_NAMES))
        table.insert(0, "confidence", probs.max(dim=1).values.numpy())
        table.insert(0, "pred", probs.argmax(dim=1).numpy())
        table.insert(0, "label", loader.labels[indices].numpy())
        table.insert(0, "index", indices.numpy())
        rank = f"_rank{trainer.global_rank}" if trainer.world_size > 1 else ""
        path = Path(trainer.log_dir or ".") / f"predictions{rank}.csv"
        write_atomic_csv(table, path)
        print(f"Predictions for {len(table)} images written to {path}")


def write_atomic_csv(table: pd.DataFrame, path: Path) -> None:
    """Write next to `path`, then rename: readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".partial")
    table.to_csv(partial, index=False, float_format="%.6f")
    os.replace(partial, path)
