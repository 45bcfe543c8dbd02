"""A run's curves as a table: per-epoch losses and accuracies, read back from what its logger
wrote, for `report`'s curves.png and the `runs` table."""

from pathlib import Path

import pandas as pd
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

# TensorBoard tags -> history columns for the curves.
CURVE_TAGS = {
    "train/loss_epoch": "train_loss",
    "train/acc": "train_acc",
    "val/loss": "val_loss",
    "val/acc": "val_acc",
}


def history_from_events(run_dir: Path) -> pd.DataFrame | None:
    """Per-epoch train/val loss and accuracy from a run's TensorBoard event files, if any."""
    if not list(run_dir.glob("events.out.tfevents.*")):
        return None
    events = EventAccumulator(str(run_dir))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    if "epoch" not in tags:
        return None
    epoch_at_step = {e.step: int(e.value) for e in events.Scalars("epoch")}
    columns = {
        column: {
            epoch_at_step[e.step]: e.value for e in events.Scalars(tag) if e.step in epoch_at_step
        }
        for tag, column in CURVE_TAGS.items()
        if tag in tags
    }
    if not columns:
        return None
    history = pd.DataFrame(columns).sort_index()
    return history.rename_axis("epoch").reset_index().assign(epoch=lambda h: h["epoch"] + 1)
