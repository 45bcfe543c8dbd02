"""The one LightningModule: trains any classifier network given to it.

MLP, CNN and ResNet recipes differ only by the `net`, optimizer and schedule chosen in YAML; the
training behaviour below is written once and shared (as in Lightning's `backbone_image_classifier`).
"""

import math
import warnings
from typing import Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassCalibrationError

from fashion_lightning.data.datamodule import Batch, normalize
from fashion_lightning.errors import FashionLightningError
from fashion_lightning.evaluation.calibration import ECE_BINS
from fashion_lightning.evaluation.inference import probabilities
from fashion_lightning.evaluation.trust import TRUST_KEY, set_trust
from fashion_lightning.evaluation.tta import TTA, resolve_tta, tta_averaged
from fashion_lightning.internals import align_optimizer_steps, set_last_lrs
from fashion_lightning.optim.build import OptimizerOptions, build_optimizer

STAGES = ("train", "val", "test")
TRAIN_LOSS = "train/loss"  # each step; the progress bar shows it
# Layers that initialise from data (the whitened stem) see this many training images, the first
# of the split's fixed order: airbench's 5000, ample for a covariance of a few dozen dimensions.
DATA_INIT_IMAGES = 5000
SCHEDULE_NEEDS_LENGTH = (
    "A learning-rate schedule (--model.lr_decay or --model.warmup_fraction) needs to know the "
    "run's length: set --trainer.max_epochs or --trainer.max_steps to a positive number."
)


def adamw(params) -> torch.optim.Optimizer:
    """The default optimizer: AdamW at lr 1e-3, PyTorch's default weight decay (0.01)."""
    return torch.optim.AdamW(params, lr=1e-3)


class ClassifierModule(L.LightningModule):
    """Softmax classification of images into `num_classes` with cross-entropy."""

    def __init__(
        self,
        net: nn.Module,
        num_classes: int = 10,
        optimizer: OptimizerCallable = adamw,
        warmup_fraction: float = 0.0,
        lr_decay: Literal["none", "linear", "cosine"] = "none",
        label_smoothing: float = 0.0,
        tta_flip: bool = False,
        norm_lr_scale: float = 1.0,
        norm_weight_decay: float | None = None,
        muon_lr: float | None = None,
        lookahead_every: int = 0,
        lookahead_alpha: float = 0.5,
        compile: bool = False,
        tta: TTA = "none",
        label_smoothing_decay: Literal["none", "linear"] = "none",
    ) -> None:
        """
        Args:
            net: The network, e.g. `fashion_lightning.models.CNN`; maps images to logits.
            num_classes: Number of classes (linked from the DataModule by the CLI).
            optimizer: Optimizer class and its arguments, e.g. `torch.optim.SGD` with `lr`.
            warmup_fraction: Fraction of all training steps over which the learning rate rises
                linearly from 0 to its peak.
            lr_decay: Decay after warm-up, per step, to 0 at the last step.
            label_smoothing: Training-loss label smoothing; validation and test report plain
                cross-entropy so their losses compare across configs.
            tta_flip: The older spelling of `tta: flip`, kept so that the configs and
                checkpoints written before `tta` existed still load; use `tta`.
            tta: Test-time augmentation outside training (`fashion_lightning.evaluation.tta`): "none";
                "flip": average the logits of each image and its mirror image (a second forward
                pass; for flip-trained nets); "flip_translate": also the mirror pair shifted by
                one pixel up-left and down-right, weighted as airbench does (6 forward passes).
            norm_lr_scale: Learning rate of every 1-D parameter (BatchNorm weights and biases,
                layer biases) as a multiple of the optimizer's; airbench trains BatchNorm biases
                at 64x the rate of the weights.
            norm_weight_decay: Weight decay of those 1-D parameters (e.g. 0: none, common
                practice); unset, the optimizer's own.
            muon_lr: Train the conv and hidden linear weights with Muon (`torch.optim.Muon`,
                each conv weight orthogonalized as an (out, in*kh*kw) matrix) at this learning
                rate, e.g. 0.02; the output layer and the 1-D parameters stay with
                --model.optimizer. Unset: Muon is off.
            lookahead_every: Lookahead (Zhang et al. 2019): every k optimizer steps move slow
                weights towards the fast ones and restart from them; 0 is off. The slow weights
                are saved with the optimizer state and restored on resume.
            lookahead_alpha: The fraction of the way the slow weights move each time, in (0, 1].
            compile: `torch.compile` the network for fit (in place: checkpoint keys stay plain).
                The first steps, and the first evaluation, pay the compile time.
            label_smoothing_decay: "linear": the label smoothing falls linearly from
                `label_smoothing` to 0 over the run's steps. Smoothing caps every confident
                logit gap at the same value (Mueller et al. 2019, arXiv:1906.02629), erasing the
                spread of confidences that temperature scaling needs; ending at 0 restores it.
        """
        super().__init__()
        for name, value, high in (
            ("warmup_fraction", warmup_fraction, 1.0),
            ("label_smoothing", label_smoothing, 0.999),
        ):
            if not 0.0 <= value <= high:
                raise FashionLightningError(
                    f"--model.{name} is {value}; it must lie between 0 and {high:g}."
                )
        with warnings.catch_warnings():  # `net` is dropped below when it cannot be a hyperparameter
            warnings.filterwarnings("ignore", message=".*is an instance of `nn.Module`")
            self.save_hyperparameters(logger=False)  # TensorBoardImages logs them with results
        # From YAML, `net` and `optimizer` arrive as configs (class_path + init_args) and are kept,
        # so a checkpoint knows its network. Objects built in Python are not data: drop them.
        for key in ("net", "optimizer"):
            if not isinstance(self.hparams.get(key), dict | str):
                self.hparams.pop(key, None)
        self.net = net
        self.make_optimizer = optimizer
        self.warmup_fraction, self.lr_decay = warmup_fraction, lr_decay
        self.label_smoothing, self.tta_flip = label_smoothing, tta_flip
        self.label_smoothing_decay = label_smoothing_decay
        self.total_steps = 0  # of the fit, set when it starts (`on_train_start`)
        self.optimizer_options = OptimizerOptions(
            norm_lr_scale, norm_weight_decay, muon_lr, lookahead_every, lookahead_alpha
        )
        check_optimizer_options(self.optimizer_options)
        self.compile_net = compile
        self.tta = resolve_tta(tta, tta_flip)
        # Per-stage metric objects ("train" cannot be a ModuleDict key: it is nn.Module.train).
        # A diverging training loss is `FiniteLoss`'s to report, not a metric's warning.
        self.metrics = nn.ModuleDict()
        for stage in STAGES:
            self.metrics[f"{stage}_acc"] = MulticlassAccuracy(num_classes, average="micro")
            self.metrics[f"{stage}_loss"] = MeanMetric(
                nan_strategy="disable" if stage == "train" else "warn"
            )
        # Test-set calibration before and after temperature scaling (fitted at the end of fit).
        for name in ("test_ece", "test_ece_uncalibrated"):
            self.metrics[name] = MulticlassCalibrationError(num_classes, n_bins=ECE_BINS)
        set_trust(self, None)  # T = 1 and no ood score until fitted (trust.FitTrust)
        # One image as the data stores it: the model summary counts the network's FLOPs on it.
        self.example_input_array = torch.zeros(1, 1, 28, 28, dtype=torch.uint8)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x) if self.training else tta_averaged(self.net, x, self.tta)

    def on_fit_start(self) -> None:
        """Layers of the network with an `init_from_data` (`models.whitening.WhiteningConv2d`)
        set themselves from the training images, as the network sees them, before the first
        step; a resumed fit's layers keep what the checkpoint restored."""
        layers = [m for m in self.net.modules() if hasattr(m, "init_from_data")]
        if not layers:
            return
        splits = getattr(self.trainer.datamodule, "splits", {})
        if "train" not in splits:
            raise FashionLightningError(
                "--model.net.init_args.whiten_stem sets the first convolution from the training "
                "images, so it needs the project's FashionMNISTDataModule (--data); turn it off "
                "to fit from other data."
            )
        images = normalize(splits["train"][0][:DATA_INIT_IMAGES])
        for layer in layers:
            layer.init_from_data(images)

    def _step(self, batch: Batch, stage: str) -> tuple[Tensor, Tensor]:
        """The step shared by train, val and test: the loss and logits; the epoch's metrics."""
        x, y, _ = batch
        logits = self(x)
        smoothing = self.current_label_smoothing() if stage == "train" else 0.0
        loss = F.cross_entropy(logits, y, label_smoothing=smoothing)
        self.metrics[f"{stage}_acc"].update(logits.detach(), y)
        self.metrics[f"{stage}_loss"].update(loss.detach(), weight=len(y))
        return loss, logits

    def on_train_start(self) -> None:
        self.total_steps = self.trainer.estimated_stepping_batches

    def current_label_smoothing(self) -> float:
        """The training loss's label smoothing at this step (`label_smoothing_decay`)."""
        steps = self.total_steps
        if self.label_smoothing_decay == "none" or not steps or not math.isfinite(steps):
            return self.label_smoothing  # also in a run of no set length
        return self.label_smoothing * max(1.0 - self.global_step / steps, 0.0)

    def _log_epoch(self, stage: str) -> None:
        """Log the epoch's accuracy and mean loss, metric objects that torchmetrics syncs across
        processes under DDP."""
        loss_name = "train/loss_epoch" if stage == "train" else f"{stage}/loss"
        self.log(loss_name, self.metrics[f"{stage}_loss"])
        self.log(f"{stage}/acc", self.metrics[f"{stage}_acc"], prog_bar=True)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        loss = self._step(batch, "train")[0]
        self.log(TRAIN_LOSS, loss)
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> Tensor:
        """Returns the logits, for callbacks (confusion matrix, misclassified images)."""
        return self._step(batch, "val")[1].detach()

    def test_step(self, batch: Batch, batch_idx: int) -> Tensor:
        logits = self._step(batch, "test")[1].detach().float()
        self.metrics["test_ece"].update((logits / self.temperature).softmax(-1), batch[1])
        self.metrics["test_ece_uncalibrated"].update(logits.softmax(-1), batch[1])
        return logits

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")
        for name in ("test_ece", "test_ece_uncalibrated"):
            self.log(name.replace("_", "/", 1), self.metrics[name])

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """The fitted temperature and ood statistics, once fitted (`trust.FitTrust`)."""
        if self.ood_state is not None:
            checkpoint[TRUST_KEY] = {"temperature": self.temperature, "ood": self.ood_state}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """A checkpoint without them (written before calibration existed, or by a fit with no
        validation) loads with T = 1 and no ood score. One written by a version that stepped the
        optimizer in `training_step` resumes at its own global step."""
        set_trust(self, checkpoint.get(TRUST_KEY))
        align_optimizer_steps(checkpoint)

    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, Tensor]:
        """Calibrated class probabilities (B, num_classes) and ood scores (B,) of the batch's
        uint8 images, through the one inference path (`inference.probabilities`), with the
        samples' labels and indices."""
        images, labels, index = batch
        probs, ood_score = probabilities(self, images)
        return {"probs": probs, "ood_score": ood_score, "label": labels, "index": index}

    def check_optimizer(self, max_epochs: int | None, max_steps: int) -> None:
        """Build the optimizer once, so that torch's refusal of a setting (a negative learning
        rate or weight decay) comes out now, as one paragraph, before the run writes anything;
        likewise a schedule on a run of no set length."""
        endless = (max_epochs is None or max_epochs < 0) and max_steps < 0
        if endless and (self.warmup_fraction or self.lr_decay != "none"):
            raise FashionLightningError(SCHEDULE_NEEDS_LENGTH)
        try:
            self._optimizer()
        except (ValueError, TypeError) as e:
            raise FashionLightningError(
                f"--model.optimizer refuses its settings: {e}. Fix the value, e.g. "
                f"--model.optimizer.lr 0.001 (learning rates and weight decay are >= 0)."
            ) from None

    def _optimizer(self) -> torch.optim.Optimizer:
        """The one optimizer, from --model.optimizer and the optimizer options (`optim.build`)."""
        return build_optimizer(self.named_parameters(), self.make_optimizer, self.optimizer_options)

    def setup(self, stage: str) -> None:
        """Compile the network in place for fit (`nn.Module.compile`): its state_dict keeps its
        plain keys, so every command loads the checkpoint."""
        if self.compile_net and stage == "fit":
            self.net.compile()

    def configure_optimizers(self):
        optimizer = self._optimizer()
        if not self.warmup_fraction and self.lr_decay == "none":
            return optimizer
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise FashionLightningError(SCHEDULE_NEEDS_LENGTH)
        total = max(int(total), 1)
        schedule = WarmupDecay(total, round(self.warmup_fraction * total), self.lr_decay)
        scheduler = WarmupDecaySchedule(optimizer, schedule)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


def check_optimizer_options(options: OptimizerOptions) -> None:
    """Refuse option values no optimizer could use, naming the option."""
    problems = {
        "norm_lr_scale": options.norm_lr_scale < 0,
        "norm_weight_decay": (options.norm_weight_decay or 0.0) < 0,
        "muon_lr": options.muon_lr is not None and options.muon_lr <= 0,
        "lookahead_every": options.lookahead_every < 0,
        "lookahead_alpha": not 0 < options.lookahead_alpha <= 1,
    }
    for name, bad in problems.items():
        if bad:
            raise FashionLightningError(
                f"--model.{name} is {getattr(options, name)}; learning rates, their scales and "
                f"weight decay are >= 0 (muon_lr > 0, or unset for no Muon), lookahead_every is "
                f"a number of steps (0: off) and lookahead_alpha lies in (0, 1]."
            )


class WarmupDecaySchedule(torch.optim.lr_scheduler.LambdaLR):
    """`WarmupDecay` as a scheduler that keeps the run's own length across a resume.

    LambdaLR's state holds the schedule's attributes, so a resume would bring back the total of
    the run that wrote the checkpoint: `fit --ckpt_path last --trainer.max_epochs` with more epochs
    would then continue on the old, finished schedule, at learning rate 0. Here the schedule built
    for this run wins, the resumed step continues on it, and a line says so. An unchanged command
    restores everything as it was, bit for bit."""

    def load_state_dict(self, state_dict: dict) -> None:
        schedule = self.lr_lambdas[0]
        own = dict(vars(schedule))
        super().load_state_dict(state_dict)
        saved = dict(vars(schedule))
        if saved == own:
            return
        vars(schedule).update(own)
        factor = schedule(self.last_epoch)
        set_last_lrs(self, [base * factor for base in self.base_lrs])
        rank_zero_only(print)(
            f"Resuming with a learning-rate schedule of {own['total']} steps instead of "
            f"{saved['total']} (the run's length changed): step {self.last_epoch} continues on the "
            f"new schedule, at learning rate {self.get_last_lr()[0]:.3g}."
        )


class WarmupDecay:
    """Learning-rate factor per step: linear warm-up to 1, then linear or cosine decay to 0."""

    def __init__(self, total_steps: int, warmup_steps: int, decay: str) -> None:
        self.total, self.warmup, self.decay = total_steps, warmup_steps, decay

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min((step - self.warmup) / max(self.total - self.warmup, 1), 1.0)
        if self.decay == "linear":
            return 1.0 - progress
        if self.decay == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0
