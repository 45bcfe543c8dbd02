"""Trusting an answer: the calibrated probabilities and the out-of-domain score, computed in one
module (`TrustedClassifier`) that predict, report, serve and export all run, and fitted once at the
end of `fit` (`FitTrust`) into the checkpoints.

A checkpoint stores what was fitted under `checkpoint["trust"]` = {"temperature": float,
"ood": EnergyMahalanobisScore state (an EnergyScore state in older ones) or None}. One written
before this existed has no such key: it loads with T = 1 and no ood score (NaN, never flagged),
and `report` calls it uncalibrated.
"""

import math
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities.rank_zero import rank_zero_info
from torch import Tensor, nn

from fashion_lightning.atomic import atomic_path
from fashion_lightning.data.datamodule import normalize
from fashion_lightning.evaluation.calibration import (
    T_MAX,
    T_MIN,
    calibration_error,
    fit_temperature,
)
from fashion_lightning.evaluation.ood import (
    EnergyMahalanobisScore,
    EnergyScore,
    ood_score_of,
    split_head,
)
from fashion_lightning.evaluation.tta import TTA, tta_averaged

TRUST_KEY = "trust"


class TrustedClassifier(nn.Module):
    """Normalized images (N, 1, 28, 28) -> (calibrated class probabilities (N, C) float32,
    ood score (N,) float32: > 1 is "not clothing", NaN when the checkpoint has no ood fit).

    With test-time augmentation the penultimate features of an image's views (`tta`) are
    averaged; since the head is linear and the weights sum to 1, its logits are exactly the
    averaged logits."""

    def __init__(
        self,
        net: nn.Module,
        tta: TTA = "none",
        temperature: float = 1.0,
        ood: dict[str, Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.body, self.head = split_head(net)
        self.tta = tta
        self.register_buffer("temperature", torch.tensor(float(temperature)))
        self.ood = ood_score_of(ood) if ood is not None else None

    def features_and_logits(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Penultimate features (N, D) and (uncalibrated) logits (N, C)."""
        features = tta_averaged(self.body, x, self.tta)
        return features, self.head(features)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features, logits = self.features_and_logits(x)
        probs = (logits.float() / self.temperature).softmax(dim=-1)
        if self.ood is None:
            return probs, torch.full_like(probs[:, 0], math.nan)
        if isinstance(self.ood, EnergyScore):  # a checkpoint fitted before the pair shipped
            return probs, self.ood(logits, self.temperature)
        return probs, self.ood(features, logits, self.temperature)


def trust_of(model: nn.Module) -> TrustedClassifier:
    """The TrustedClassifier of a `ClassifierModule` (its network, TTA and fitted values)."""
    return TrustedClassifier(model.net, model.tta, model.temperature, model.ood_state)


class FitTrust(Callback):
    """At the end of `fit`: for the best checkpoint and last.ckpt (each with its own weights),
    fit the temperature and the ood threshold on the validation split's final logits, and write
    them into that checkpoint file. The model in memory keeps
    its weights and gets the values of last.ckpt, which holds the same final weights. Under DDP
    every rank computes its share of the images and the outputs are gathered, so all ranks fit
    the same values; rank 0 writes the files. A fit with no validation keeps T = 1 and no ood
    score, and says so."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """A resumed fit's checkpoints must not carry the values fitted to older weights."""
        set_trust(pl_module, None)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = trainer.datamodule
        splits = getattr(datamodule, "splits", {})
        if not trainer.limit_val_batches or "val" not in splits or trainer.fast_dev_run:
            rank_zero_info("No validation in this fit: the model stays uncalibrated (T = 1).")
            return
        splits = splits_seen(trainer, splits)
        trainer.strategy.barrier()  # every checkpoint file is complete before it is read
        home = pl_module.device  # Lightning's teardown has moved the module off the accelerator
        pl_module.to(trainer.strategy.root_device)
        in_memory = {k: v.clone() for k, v in pl_module.state_dict().items()}
        trust, fitted_at = None, None
        for path in checkpoint_files(trainer):  # the best, then last.ckpt
            start = time.perf_counter()
            checkpoint = torch.load(path, map_location="cpu")
            step = (checkpoint.get("epoch"), checkpoint.get("global_step"))
            if step != fitted_at:  # else the best is the last: the same weights, the same fit
                pl_module.load_state_dict(checkpoint["state_dict"])
                trust, fitted_at = fit_trust(trainer, pl_module, splits), step
            if trainer.is_global_zero:
                write_trust(path, trust)
            rank_zero_info(
                f"Calibrated {path.name} in {time.perf_counter() - start:.1f} s: T = "
                f"{trust['temperature']:.3f}, validation ECE {trust['val_ece_before']:.2%} -> "
                f"{trust['val_ece_after']:.2%}.{at_bound(trust)}"
            )
        pl_module.load_state_dict(in_memory)
        set_trust(pl_module, trust or fit_trust(trainer, pl_module, splits))  # or no files
        pl_module.to(home)
        trainer.strategy.barrier()


def checkpoint_files(trainer: L.Trainer) -> list[Path]:
    """The best checkpoint and last.ckpt of this fit, when written."""
    callback = trainer.checkpoint_callback
    if not isinstance(callback, ModelCheckpoint):
        return []
    paths = [callback.best_model_path, callback.last_model_path]
    return [Path(p) for p in dict.fromkeys(p for p in paths if p and Path(p).is_file())]


def at_bound(trust: dict) -> str:
    """What happened, for the calibration line, when T sits at the edge of its fitted range."""
    temperature, accuracy = trust["temperature"], trust["val_acc"]
    if T_MIN < temperature < T_MAX:
        return ""
    edge = f" T is at the edge of its range [{T_MIN:g}, {T_MAX:g}]"
    if temperature >= T_MAX:
        return (
            f"{edge}: at {accuracy:.0%} validation accuracy the confidences say little about "
            f"being right, so the validation NLL keeps falling toward uniform probabilities. "
            f"Train longer (more epochs or batches) before trusting the confidences."
        )
    if accuracy == 1.0:
        return (
            f"{edge}: the model gets every one of the validation images it was calibrated on "
            f"right, so the NLL has no minimum. Calibrate on more of them (--data.val_size, "
            f"--trainer.limit_val_batches) before trusting the confidences."
        )
    return (
        f"{edge}: at {accuracy:.0%} validation accuracy the model is far less confident than "
        f"it is right; the NLL still falls at T = {T_MIN:g}. Train longer before trusting the "
        f"confidences."
    )


def splits_seen(trainer: L.Trainer, splits: dict) -> dict:
    """The validation and training images the fit's loops saw (all of them, or as many as
    `--trainer.limit_val_batches` / `limit_train_batches` let through): calibration fits on
    the batches the run validates, so a smoke run's calibration is as short as its fit."""
    world, datamodule = trainer.world_size, trainer.datamodule
    seen = {
        "val": (trainer.num_val_batches, getattr(datamodule, "eval_batch_size", None)),
        "train": ([trainer.num_training_batches], getattr(datamodule, "batch_size", None)),
    }
    cut = dict(splits)
    for name, (batches, batch_size) in seen.items():
        total = sum(batches) if batches else math.inf
        if batch_size and math.isfinite(total):
            n = int(total) * batch_size * world
            cut[name] = tuple(t[:n] for t in splits[name])
    return cut


# Training images whose penultimate features give the Mahalanobis class means and covariance:
# 10,000 estimate a 256x256 covariance well and cost one second of the default recipe.
MAHALANOBIS_IMAGES = 10_000


@torch.inference_mode()
def fit_trust(trainer: L.Trainer, pl_module: L.LightningModule, splits: dict) -> dict:
    """The temperature and ood statistics of `pl_module`'s current weights, with the validation
    ECE before and after scaling."""
    was_training = pl_module.training
    pl_module.eval()
    trusted = TrustedClassifier(pl_module.net, pl_module.tta)
    val_images, val_labels = splits["val"]
    val_features, val_logits = gathered_outputs(trainer, trusted, val_images)
    train_images, train_labels = (t[:MAHALANOBIS_IMAGES] for t in splits["train"])
    train_features = gathered_outputs(trainer, trusted, train_images)[0]
    pl_module.train(was_training)
    temperature = fit_temperature(val_logits, val_labels)
    num_classes = val_logits.shape[-1]
    ood = EnergyMahalanobisScore.fit(
        (train_features, train_labels), val_features, val_logits, temperature, num_classes
    )
    return {
        "temperature": temperature,
        "ood": ood.state(),
        "val_acc": float((val_logits.argmax(-1) == val_labels).float().mean()),
        "val_ece_before": calibration_error(val_logits.softmax(-1), val_labels),
        "val_ece_after": calibration_error((val_logits / temperature).softmax(-1), val_labels),
    }


def gathered_outputs(
    trainer: L.Trainer, trusted: TrustedClassifier, images: Tensor, batch_size: int = 1000
) -> tuple[Tensor, Tensor]:
    """Features and logits of uint8 `images` (N, 1, 28, 28), in order, on CPU, in float32: each
    rank computes every world_size-th image, and the shares are gathered (padded to one length,
    as all_gather needs)."""
    rank, world = trainer.global_rank, trainer.world_size
    device = trainer.strategy.root_device
    share = images[rank::world]
    outputs = [
        trusted.features_and_logits(normalize(share[i : i + batch_size].to(device)))
        for i in range(0, len(share), batch_size)
    ]
    features, logits = (torch.cat([o[k].float() for o in outputs]) for k in (0, 1))
    if world == 1:
        return features.cpu(), logits.cpu()
    length = -(-len(images) // world)
    padded = [torch.nn.functional.pad(t, (0, 0, 0, length - len(t))) for t in (features, logits)]
    # (world, length, D): image j * world + r is row j of rank r. torch's own collective:
    # Lightning's `strategy.all_gather` goes through one torch deprecates (a FutureWarning).
    gathered = [gather_ranks(t).transpose(0, 1) for t in padded]
    return tuple(t.reshape(world * length, -1)[: len(images)].cpu() for t in gathered)


def gather_ranks(tensor: Tensor) -> Tensor:
    """(world, *tensor.shape): every rank's `tensor`, the same shape on each."""
    parts = [torch.empty_like(tensor) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(parts, tensor.contiguous())
    return torch.stack(parts)


def set_trust(pl_module: nn.Module, trust: dict | None) -> None:
    """Put fitted values (a checkpoint's `trust` entry, or None for none) on the module."""
    trust = trust or {}
    pl_module.temperature = float(trust.get("temperature", 1.0))
    pl_module.ood_state = trust.get("ood")


def write_trust(path: Path, trust: dict) -> None:
    """Add the fitted values to the checkpoint file at `path`, written aside and renamed."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    checkpoint[TRUST_KEY] = trust
    with atomic_path(path) as partial:
        torch.save(checkpoint, partial)
