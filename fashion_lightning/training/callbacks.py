"""Lightning callbacks of the project: what gets written to disk besides Lightning's own logs."""

import math
import os
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, Callback, TQDMProgressBar
from lightning.pytorch.core.saving import save_hparams_to_yaml
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix

from fashion_lightning.atomic import write_atomic_csv
from fashion_lightning.data import photos
from fashion_lightning.data.datamodule import FashionMNISTDataModule
from fashion_lightning.data.idx import CLASS_NAMES
from fashion_lightning.errors import FashionLightningError
from fashion_lightning.evaluation import plots
from fashion_lightning.evaluation.verdict import verdict
from fashion_lightning.training.module import TRAIN_LOSS


class PredictionWriter(BasePredictionWriter):
    """Writes the predictions after `predict`, into `folder` (the CLI sets it: the checkpoint's
    run folder). For the test set, `predictions.csv`: one row per image with its index, true
    label, predicted class, confidence, all class probabilities, `ood_score` and `verdict`
    (`clothing`, or `not clothing` when the ood score is above 1). For your photos
    (`--data.predict_path`), a file of their own named after the folder or file given
    (`predictions_photos.csv` for photos/; `predictions_photos_2.csv` when that name already
    holds another folder's): one row per file with its absolute path, class name, confidence,
    probabilities, `ood_score`, `verdict` and `error` (why a file could not be used), plus the
    same name as .png, the photos beside the 28x28 images the model saw. Under DDP each rank
    writes its own file (`predictions_rank<R>.csv`) for the images it saw. `written` is the
    last file written."""

    def __init__(self, grid_size: int = 24) -> None:
        super().__init__(write_interval="epoch")
        self.grid_size = grid_size  # photos drawn in the .png beside the photos' table
        self.folder = Path(".")
        self.written: Path | None = None

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        index, labels, probs, ood = (
            torch.cat([p[key] for p in predictions]).cpu()
            for key in ("index", "label", "probs", "ood_score")
        )
        found = getattr(trainer.datamodule, "photos", None)
        rank = f"_rank{trainer.global_rank}" if trainer.world_size > 1 else ""
        if found is None:
            path = self.folder / f"predictions{rank}.csv"
            table = test_set_table(index, labels, probs.float(), ood.float())
            what = f"{len(table)} images"
        else:
            table = photo_table(found, index, probs.float(), ood.float())
            path = photos_csv(self.folder, Path(trainer.datamodule.predict_path), rank)
            grid = plots.photo_grid(*photo_grid_inputs(found, index, table, self.grid_size))
            plots.save_png(grid, path.with_suffix(".png"))
            failed = int((table["error"] != "").sum())
            what = f"{len(table) - failed} of {len(table)} photos"
        write_atomic_csv(table, path)
        self.written = path
        unusable = (
            f" ({failed} could not be used: see the error column)" if found and failed else ""
        )
        bar = trainer.progress_bar_callback  # a line of its own, not glued to a bar's
        say = bar.print if bar is not None and bar.is_enabled else print
        say(f"Predictions for {what} written to {path}{unusable}")


def photos_csv(folder: Path, source: Path, rank: str) -> Path:
    """The photos' table in `folder`, named after `source` (the folder or file predicted): a
    prediction set never replaces another's, only its own earlier one."""
    source = source.absolute()
    stem = f"predictions_{source.stem or 'photos'}{rank}"
    for n in range(1, 1000):
        path = folder / (f"{stem}.csv" if n == 1 else f"{stem}_{n}.csv")
        earlier = predicted_from(path) if path.is_file() else source
        if earlier is None or earlier == source or source in earlier.parents:
            return path
    raise FashionLightningError(f"{folder} holds 999 prediction files named {stem}: clear some.")


def predicted_from(path: Path) -> Path | None:
    """Where a photos' table's files lie (their common folder, or the one file), or None when
    it cannot be told."""
    try:
        files = pd.read_csv(path, usecols=["file"])["file"].astype(str).tolist()
    except (OSError, ValueError, pd.errors.ParserError):
        return None
    if len(files) == 1:
        return Path(files[0])
    return Path(os.path.commonpath(files)) if files else None


def probability_table(probs: Tensor, ood_scores: Tensor) -> pd.DataFrame:
    """The confidence, one probability column per class, `ood_score` and `verdict`."""
    table = pd.DataFrame(probs.numpy(), columns=list(CLASS_NAMES))
    table.insert(0, "confidence", probs.max(dim=1).values.numpy())
    table["ood_score"] = ood_scores.numpy()
    table["verdict"] = [verdict(s) for s in ood_scores.tolist()]
    return table


def test_set_table(indices: Tensor, labels: Tensor, probs: Tensor, ood: Tensor) -> pd.DataFrame:
    """Rows of the test set: `index`, `label`, `pred`, `confidence`, one column per class,
    `ood_score`, `verdict`."""
    table = probability_table(probs, ood)
    table.insert(0, "pred", probs.argmax(dim=1).numpy())
    table.insert(0, "label", labels.numpy())
    table.insert(0, "index", indices.numpy())
    return table


def photo_table(found: photos.Photos, indices: Tensor, probs: Tensor, ood: Tensor) -> pd.DataFrame:
    """Rows of photos: `file`, `class`, `confidence`, one column per class, `ood_score`,
    `verdict`, `error`; a file that could not be used has only its name and its error."""
    errors = [found.errors[i] for i in indices.tolist()]
    table = probability_table(probs, ood)
    table.insert(0, "class", [CLASS_NAMES[c] for c in probs.argmax(dim=1).tolist()])
    table.insert(0, "file", [os.path.abspath(found.files[i]) for i in indices.tolist()])
    table["error"] = errors
    failed = table["error"] != ""
    table.loc[failed, ["class", "confidence", *CLASS_NAMES, "ood_score", "verdict"]] = None
    return table


def photo_grid_inputs(found: photos.Photos, indices: Tensor, table: pd.DataFrame, size: int):
    """The first `size` usable photos, the images the model saw, and their captions."""
    rows = [r for r, i in enumerate(indices.tolist()) if not found.errors[i]][:size]
    chosen = [indices[r].item() for r in rows]
    originals = [np.asarray(photos.read_photo(found.files[i], working_size=112)) for i in chosen]
    captions = [f"{table['class'][r]} {table['confidence'][r]:.0%}" for r in rows]
    names = [Path(found.files[i]).name for i in chosen]
    return originals, found.images[chosen], names, captions


def init_arguments(hparams: dict) -> dict:
    """Saved hyperparameters without LightningCLI's bookkeeping (`_instantiator`)."""
    return {k: v for k, v in hparams.items() if not k.startswith("_")}


class TensorBoardImages(Callback):
    """Pictures in TensorBoard's Images tab, and results in its HParams tab:

    - `val/confusion_matrix` after every validation epoch (all ranks' images, synced);
    - `fit/samples`, a grid of training images per class, when a fit starts;
    - `val/misclassified`, the most confident mistakes of the last validation epoch, when it ends;
    - the model's and data's hyperparameters and the seed with the final test metrics and the
      best val/acc, after a test: runs compare in the HParams tab.

    Does nothing without a TensorBoardLogger.
    """

    def __init__(self, draw: bool = True, misclassified: int = 16) -> None:
        """
        Args:
            draw: Draw the pictures (matplotlib takes a good part of a second for each: a quick
                experiment or a test may go without); the HParams are logged regardless.
            misclassified: How many of the most confident mistakes `val/misclassified` shows.
        """
        self.draw, self.misclassified = draw, misclassified
        self.confusion = MulticlassConfusionMatrix(len(CLASS_NAMES))
        self.mistakes: dict[str, Tensor] = {}
        self.seen = 0

    def _drawing(self, trainer: L.Trainer) -> bool:
        return self.draw and isinstance(trainer.logger, TensorBoardLogger)

    def _add_figure(self, trainer: L.Trainer, tag: str, fig) -> None:
        if trainer.is_global_zero:
            trainer.logger.experiment.add_figure(
                tag, fig, global_step=trainer.global_step, close=True
            )

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = trainer.datamodule
        if isinstance(datamodule, FashionMNISTDataModule) and self._drawing(trainer):
            images, labels = datamodule.splits["train"]
            fig = plots.sample_grid(images[:2000, 0].numpy(), labels[:2000].numpy(), CLASS_NAMES)
            self._add_figure(trainer, "fit/samples", fig)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._drawing(trainer):
            return
        self.confusion = self.confusion.to(pl_module.device)
        self.confusion.reset()
        self.mistakes, self.seen = {}, 0

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ):
        if not self._drawing(trainer):
            return
        images, labels, _ = batch
        self.confusion.update(outputs, labels)
        probs = outputs.float().softmax(dim=-1)
        wrong = probs.argmax(dim=-1) != labels
        self.seen += len(labels)
        found = {
            "images": FashionMNISTDataModule.to_uint8(images[wrong, 0]),
            "labels": labels[wrong],
            "probs": probs[wrong],
        }
        merged = {
            k: torch.cat([self.mistakes[k], v]) if self.mistakes else v for k, v in found.items()
        }
        keep = merged["probs"].max(dim=-1).values.argsort(descending=True)[: self.misclassified]
        self.mistakes = {k: v[keep] for k, v in merged.items()}

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._drawing(trainer):
            return
        matrix = self.confusion.compute()  # every rank takes part in the sync
        if not trainer.sanity_checking:
            self._add_figure(
                trainer,
                "val/confusion_matrix",
                plots.confusion_matrix(matrix.cpu().numpy(), CLASS_NAMES),
            )

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._drawing(trainer) and self.mistakes and len(self.mistakes["labels"]):
            m = {k: v.cpu().numpy() for k, v in self.mistakes.items()}
            title = f"Most confident mistakes of the last validation epoch ({self.seen} images)"
            fig = plots.misclassified_grid(
                m["images"], m["labels"], m["probs"], CLASS_NAMES, title=title
            )
            self._add_figure(trainer, "val/misclassified", fig)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = trainer.logger
        if not isinstance(logger, TensorBoardLogger):
            return
        params = {
            "model": init_arguments(pl_module.hparams),
            "seed": os.environ.get("PL_GLOBAL_SEED"),
        }
        if trainer.datamodule is not None:
            params["data"] = init_arguments(trainer.datamodule.hparams)
        metrics = {
            f"hp/{k.replace('/', '_')}": v.item()
            for k, v in trainer.callback_metrics.items()
            if k.startswith("test/")
        }
        checkpoint = trainer.checkpoint_callback  # after fit: what validation chose, beside test
        if checkpoint is not None and checkpoint.best_model_score is not None:
            metrics["hp/val_acc"] = float(checkpoint.best_model_score)
        logger.log_hyperparams(params, metrics)
        # The logger writes hparams.yaml once, when it is created (empty): rewrite it with them.
        save_hparams_to_yaml(Path(logger.log_dir) / "hparams.yaml", logger.hparams)


class ProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar, with the training bar redrawn at most every `interval` seconds (and
    at each epoch's last batch) instead of every n batches: a fixed count redraws hundreds of
    times a second for a small network and rarely for a big one; time keeps both at a few a
    second.
    Evaluation bars redraw every batch, as Lightning's do: their batches are large.

    Without a terminal (`fit ... > fit.log`, a batch job) a redrawn bar is a log full of `\r`
    and escape codes: there it prints one plain line per epoch instead."""

    def __init__(self, interval: float = 0.25, lines: bool | None = None) -> None:
        """
        Args:
            interval: Seconds between two redraws of the training bar.
            lines: One line per epoch instead of bars. Default: when stdout is no terminal.
        """
        super().__init__(refresh_rate=1)
        self.interval = interval
        self.lines = not sys.stdout.isatty() if lines is None else lines
        self._drawn = -math.inf
        self._printed = 0  # the last epoch whose line was printed

    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if self.lines:
            self.disable()

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        self._printed = trainer.fit_loop.epoch_progress.current.completed  # a resume's are done

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        self.print_epoch_line(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        super().on_train_end(trainer, pl_module)
        self.print_epoch_line(trainer, pl_module)

    def print_epoch_line(self, trainer, pl_module) -> None:
        """The finished epoch's line (once the module has logged its epoch metrics, which it
        does after the callbacks' `on_train_epoch_end`): at the next epoch's start, or the end."""
        epoch = trainer.fit_loop.epoch_progress.current.completed
        if not self.lines or not trainer.is_global_zero or epoch <= self._printed:
            return
        self._printed = epoch
        metrics = self.get_metrics(trainer, pl_module)
        shown = ", ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
            for k, v in metrics.items()
            if k != "v_num"
        )
        total = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        print(f"Epoch {epoch}{total}" + (f": {shown}" if shown else ""), flush=True)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.monotonic()
        if now - self._drawn >= self.interval or batch_idx + 1 == self.total_train_batches:
            self._drawn = now
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def get_metrics(self, trainer, pl_module) -> dict:
        """Lightning's items plus the last logged training loss, read from the device only when
        the bar is drawn (a `prog_bar=True` metric is read at every step: a GPU sync each)."""
        items = super().get_metrics(trainer, pl_module)
        loss = trainer.callback_metrics.get(TRAIN_LOSS)
        if loss is not None:
            items[TRAIN_LOSS] = loss.item()
        return items
