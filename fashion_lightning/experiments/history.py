"""A run's curves as a table: per-epoch losses and accuracies, read back from what its logger
wrote (TensorBoard's event files, or a CSVLogger's metrics.csv), for `report`'s curves.png and
the `runs` table."""

from pathlib import Path

import pandas as pd
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

# Logged names (TensorBoard tags, CSVLogger columns) -> history columns for the curves.
CURVE_TAGS = {
    "train/loss_epoch": "train_loss",
    "train/acc": "train_acc",
    "val/loss": "val_loss",
    "val/acc": "val_acc",
}


def run_history(run_dir: Path) -> pd.DataFrame | None:
    """Per-epoch train/val loss and accuracy (columns `epoch`, from 1, and CURVE_TAGS' values)
    from whichever of Lightning's loggers wrote the run, if any."""
    history = history_from_events(run_dir)
    return history if history is not None else history_from_csv(run_dir / "metrics.csv")


def history_from_csv(path: Path) -> pd.DataFrame | None:
    """The same from a CSVLogger's metrics.csv: one row per logging call, blank where a metric
    was not logged; an epoch's value is its last logged one."""
    try:
        logged = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return None
    present = [tag for tag in CURVE_TAGS if tag in logged]
    if "epoch" not in logged or not present:
        return None
    by_epoch = logged.dropna(subset=["epoch"]).groupby("epoch")[present].last()
    history = by_epoch.dropna(how="all").rename(columns=CURVE_TAGS)
    history.index = history.index.astype(int) + 1
    return history.rename_axis("epoch").reset_index()


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
