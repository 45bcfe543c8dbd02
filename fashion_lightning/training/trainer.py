"""The Trainer policy: its defaults, the project's callbacks, the precision it trains in, and the
output folders it must be able to write before any work starts."""

from pathlib import Path

from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.utilities.rank_zero import rank_zero_info

from fashion_lightning.atomic import check_writable
from fashion_lightning.evaluation.trust import FitTrust
from fashion_lightning.training.callbacks import PredictionWriter, ProgressBar
from fashion_lightning.training.precision import Capabilities, resolve_precision
from fashion_lightning.training.resilience import EpochEndLastCheckpoint, ExactResume, FiniteLoss
from fashion_lightning.training.run_status import RunStatus


def trainer_defaults() -> dict:
    """The Trainer's defaults. The project's callbacks are added in `project_callbacks`, so a
    recipe's `trainer.callbacks` (e.g. weight EMA) adds to them rather than replacing them."""
    return {
        "max_epochs": 10,
        "default_root_dir": "lightning_logs",  # where checkpoints go when there is no logger
        "logger": {
            "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
            "init_args": {"save_dir": ".", "name": "lightning_logs", "default_hp_metric": False},
        },
    }


def project_callbacks(
    trainer: dict, recipe: str | None = None, validates: bool = True
) -> list[Callback]:
    """The project's callbacks; some only make sense with checkpointing, a logger or a progress
    bar on. Built per run, since callbacks keep state (e.g. the best checkpoint). `recipe` (the
    config file's name) is recorded in the run's status file. A fit that `validates` nothing
    (--data.val_size 0) keeps its last epoch as its best checkpoint."""
    callbacks: list[Callback] = [
        PredictionWriter(),
        ExactResume(),
        FiniteLoss(),
        RunStatus(recipe),
        FitTrust(),  # after ModelCheckpoint and LastCheckpoint have written their files
    ]
    if trainer.get("enable_checkpointing") is not False:  # a ModelCheckpoint would raise
        callbacks += [
            ModelCheckpoint(
                monitor="val/acc" if validates else None,
                mode="max",
                save_last=False,  # LastCheckpoint writes last.ckpt, at every epoch end and more
                filename="epoch={epoch}-val_acc={val/acc:.4f}" if validates else "epoch={epoch}",
                auto_insert_metric_name=False,
            ),
            EpochEndLastCheckpoint(),  # after it: last.ckpt names the epoch's best
        ]
    if trainer.get("logger") not in (False, None):
        callbacks.append(LearningRateMonitor())  # raises without a logger
    if trainer.get("enable_progress_bar") is not False:
        callbacks.append(ProgressBar())
    return callbacks


def auto_precision(accelerator: str) -> str:
    """The precision this machine computes fastest, announced with its reason in one line."""
    precision, reason = resolve_precision(accelerator, Capabilities.detect())
    rank_zero_info(f"Precision: {precision}, since {reason}. Set --trainer.precision to override.")
    return precision


def check_outputs(trainer: Trainer) -> None:
    """Refuse unwritable log and checkpoint folders now, not after the first epoch's work."""
    check_writable(Path(trainer.default_root_dir), "--trainer.default_root_dir")
    logger = trainer.logger
    if logger is not None and logger.save_dir is not None:
        check_writable(Path(logger.save_dir), "--trainer.logger.init_args.save_dir")
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.dirpath:
            check_writable(Path(callback.dirpath), "the ModelCheckpoint dirpath")
