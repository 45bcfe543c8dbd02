"""Fault tolerance: a killed, preempted or diverging run loses nothing and resumes exactly.

- `ExactResume` stores the global random states (augmentation, dropout) in every checkpoint and
  puts them and the training batches' position back right before the first resumed step;
- `LastCheckpoint` writes `last.ckpt` every few minutes of training, and on SIGTERM or SIGINT at
  the next batch boundary, then says how to resume and exits 143 or 130; `EpochEndLastCheckpoint`
  writes it at every epoch end, once ModelCheckpoint has recorded that epoch's best;
- `FiniteLoss` stops at the first NaN or infinite training loss, before the step reaches the weights;
- `AtomicCheckpointIO` writes checkpoints beside their place and renames them into it;
"""

import math
import os
import random
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, Checkpoint, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.combined_loader import CombinedLoader
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from torch import Tensor

from fashion_lightning.errors import FashionLightningError, NonFiniteLoss, paragraph
from fashion_lightning.internals import Stateful, saved_loader_states

RNG_KEY = "rng_states"
EXIT_CODES = {signal.SIGTERM: 143, signal.SIGINT: 130}  # 128 + signal number, as shells report
# Under DDP (and on GPUs) the per-step checks are agreed every this many steps: a signal or a
# non-finite loss stops all ranks at the same step, for one tiny all-reduce per 16 steps.
AGREE_EVERY = 16
NONE = 2**62  # "no non-finite step yet", as a step number that min() over ranks ignores


def rng_states() -> dict[str, Any]:
    """The global random states as tensors and plain types, so checkpoints load with weights_only."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002 - the global one
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": pos,
            "has_gauss": has_gauss,
            "gauss": gauss,
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Undo `rng_states()`."""
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["gauss"]))  # noqa: NPY002
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class ExactResume(Callback):
    """Makes a resumed fit take exactly the steps the uninterrupted fit would have taken.

    Saves the global random states with every checkpoint; on resume, restores them and the
    training batches' position in `on_train_start`, i.e. after anything else that draws random
    numbers and just before the first resumed batch. Lightning restores loader states itself only
    when the loader is first built after the checkpoint was read, which a schedule that asks for
    `trainer.estimated_stepping_batches` prevents (Lightning issue #20550), and not at all for a
    checkpoint written at the end of an epoch; putting them back here covers both.
    Under DDP, every rank draws the same random numbers (same seed, same batch shapes), so the
    states of rank 0, which writes the checkpoint, serve all ranks.
    """

    def __init__(self) -> None:
        self._rng: dict[str, Any] | None = None
        self._loader_states: list[dict] = []

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint[RNG_KEY] = rng_states()

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        self._rng = checkpoint.get(RNG_KEY)
        self._loader_states = saved_loader_states(checkpoint)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        flattened = CombinedLoader(trainer.train_dataloader).flattened
        loaders = [loader for loader in flattened if isinstance(loader, Stateful)]
        for loader, state in zip(loaders, self._loader_states):
            if state.get("position", 0) >= trainer.num_training_batches:  # epoch done (limits too)
                state = {**state, "position": len(loader)}
            loader.load_state_dict(state)
        if self._rng is not None:
            set_rng_states(self._rng)
        self._rng, self._loader_states = None, []


class Stopped(SystemExit):
    """The run stopped on a signal after writing last.ckpt; exits with the shell's status."""


class LastCheckpoint(Callback):
    """Owns `last.ckpt` (in the ModelCheckpoint's folder): writes it every `every_minutes` of
    training and at the batch boundary where SIGTERM (SLURM, Kubernetes, `timeout`) or SIGINT
    (Ctrl-C) stops the run, which then prints the command that resumes it and exits 143 or 130.
    A second Ctrl-C quits at once. `EpochEndLastCheckpoint` writes it at every epoch end. (Lightning
    2.6's own `save_last` rewrites last.ckpt only when a new best checkpoint is saved.)

    On one process the signal and the timer are two attribute reads per step. Under DDP the ranks
    agree every `AGREE_EVERY` steps (one tiny all-reduce), so all of them stop at the same step
    and rank 0 writes the checkpoint. Under SLURM, the handler Lightning installs
    for the requeue signal (SIGUSR1: save `hpc_ckpt_N.ckpt`, `scontrol requeue`) is deferred to
    that batch boundary too, after last.ckpt is written, so both hold the same exact step."""

    def __init__(self, every_minutes: float = 5.0) -> None:
        """
        Args:
            every_minutes: Also rewrite last.ckpt after this many minutes of training since the
                last write (0 turns the timer off; signals still write it).
        """
        if every_minutes < 0:
            raise FashionLightningError(
                f"--last_checkpoint.every_minutes is {every_minutes}; use 0 (off) or more."
            )
        self.every_seconds = every_minutes * 60
        self.received: int = 0  # the signal number, once one arrives
        self._previous: dict[int, Any] = {}
        self._deferred: Any = None  # the requeue-signal handler found installed, if any
        self._last_write = time.monotonic()

    def _handle(self, signum: int, frame) -> None:
        if self.received == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the user insists
        self.received = max(self.received, signum)
        name = signal.Signals(signum).name
        print(
            f"\n{name} received: stopping after this batch, once last.ckpt is written.",
            file=sys.stderr,
            flush=True,
        )

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Replaces Lightning's SIGTERM handler (which exits 0, and under DDP broadcasts from
        inside the handler) and Python's SIGINT one (a KeyboardInterrupt wherever it lands)."""
        self._last_write = time.monotonic()
        self.received = int(signal.SIGTERM) if trainer.received_sigterm else 0  # during setup
        for signum in EXIT_CODES:
            self._previous[signum] = signal.signal(signum, self._handle)
        requeue = signal.getsignal(signal.SIGUSR1)
        if callable(requeue):  # Lightning's SLURM auto-requeue
            self._deferred = requeue
            self._previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, self._handle)

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """A signal during the last validation: training is over and last.ckpt is current, but
        the user asked to stop, so stop before the test."""
        signum = self._agreed(trainer, pl_module)[0]
        self._restore_handlers()
        if signum:
            checkpoint = trainer.checkpoint_callback
            path = checkpoint.last_model_path if isinstance(checkpoint, ModelCheckpoint) else None
            report_stop(signum, path or None, trainer.global_step)
            raise Stopped(EXIT_CODES.get(signum, 128 + signum))

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._restore_handlers()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """`EpochEndLastCheckpoint` has just written last.ckpt (checkpointing on): the timer
        counts from there."""
        self._last_write = time.monotonic()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.world_size == 1:  # two attribute reads: nothing to agree on
            signum, due = self.received, self._timer_due()
        elif trainer.global_step % AGREE_EVERY == 0:  # the same steps on every rank
            signum, due = self._agreed(trainer, pl_module)
        else:
            return
        if not (signum or due):
            return
        checkpoint = trainer.checkpoint_callback
        path = None
        if isinstance(checkpoint, ModelCheckpoint) and checkpoint.dirpath:
            path = save_last(trainer, checkpoint)
            self._last_write = time.monotonic()
        if signum == signal.SIGUSR1 and self._deferred is not None:
            self._deferred(signum, None)  # Lightning's: hpc checkpoint, then requeue the job
        if signum:
            report_stop(signum, path, trainer.global_step)
            raise Stopped(EXIT_CODES.get(signum, 128 + signum))

    def _timer_due(self) -> bool:
        return self.every_seconds > 0 and time.monotonic() - self._last_write >= self.every_seconds

    def _agreed(self, trainer: L.Trainer, pl_module: L.LightningModule) -> tuple[int, bool]:
        """(the signal received by any rank or 0, whether any rank's timer is due): one tiny
        all-reduce under DDP, so every rank stops at the same step."""
        decision = torch.tensor([self.received, int(self._timer_due())], device=pl_module.device)
        if trainer.world_size > 1:
            decision = trainer.strategy.reduce(decision, reduce_op="max")
        signum, due = decision.tolist()
        return int(signum), bool(due)


class EpochEndLastCheckpoint(Checkpoint):
    """Writes last.ckpt at the end of every training epoch, after ModelCheckpoint.

    ModelCheckpoint records an epoch's new best (and deletes the best it replaces) in its own
    `on_train_epoch_end` when validation runs every epoch. Lightning calls that hook of
    `Checkpoint` callbacks after every other callback's (and in their list order), so this one,
    placed after the ModelCheckpoint, writes a last.ckpt that names the best file that exists;
    written before, it named the deleted one, and resuming the finished run failed on it. It is a
    callback of its own because Lightning refuses `Checkpoint` callbacks when checkpointing is
    off, while `LastCheckpoint` still handles signals then (see `trainer.project_callbacks`).
    """

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Name last.ckpt in the ModelCheckpoint's state (after its own `setup` has chosen the
        folder) before any checkpoint is written, so that the best ones record it too: fit's
        final test restores the best checkpoint's callback states, and the run's last.ckpt must
        still be known after that."""
        checkpoint = last_checkpoint_home(trainer)
        if stage == "fit" and checkpoint is not None:
            checkpoint.last_model_path = last_path(checkpoint)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        checkpoint = last_checkpoint_home(trainer)
        if checkpoint is not None:
            save_last(trainer, checkpoint)


def last_checkpoint_home(trainer: L.Trainer) -> ModelCheckpoint | None:
    """The ModelCheckpoint in whose folder last.ckpt lives; None when nothing is written (no
    checkpointing, or a fast_dev_run)."""
    checkpoint = trainer.checkpoint_callback
    if isinstance(checkpoint, ModelCheckpoint) and checkpoint.dirpath and not trainer.fast_dev_run:
        return checkpoint
    return None


def last_path(checkpoint: ModelCheckpoint) -> str:
    return os.path.join(
        checkpoint.dirpath, checkpoint.CHECKPOINT_NAME_LAST + checkpoint.FILE_EXTENSION
    )


def save_last(trainer: L.Trainer, checkpoint: ModelCheckpoint) -> str:
    """Write the trainer's state to the ModelCheckpoint's last.ckpt (every rank must call this)."""
    path = last_path(checkpoint)
    checkpoint.last_model_path = path  # part of the state: the resumed run keeps this name
    trainer.save_checkpoint(path, weights_only=False)  # the whole state, to resume from
    return path


@rank_zero_only
def report_stop(signum: int, path: str | None, step: int) -> None:
    name = signal.Signals(signum).name
    if path is None:
        where = "No checkpoint was written (checkpointing is off)."
    else:
        where = f"last.ckpt was written at step {step}: {path}."
    command = shlex.join(["python", "-m", "fashion_lightning", *resume_args(sys.argv[1:])])
    message = f"Stopped by {name}. {where} To resume exactly where it stopped, run:"
    # The command on a line of its own, unwrapped, so that it can be copied and pasted.
    print(f"{paragraph(message, prefix='')}\n  {command}", file=sys.stderr, flush=True)


def resume_args(args: list[str]) -> list[str]:
    """The command-line arguments of this run with `--ckpt_path last` in place of any other."""
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--ckpt_path":
            skip = True
        elif not arg.startswith("--ckpt_path="):
            kept.append(arg)
    return [*kept, "--ckpt_path", "last"]


class FiniteLoss(Callback):
    """Stops the fit at the first NaN or infinite training loss, naming its step, the loss and
    the learning rate; under DDP all ranks stop together. No checkpoint is written afterwards,
    and none with non-finite weights is ever written.

    On one CPU process the loss is read every step (a host read, no sync) and the run stops
    before the bad step reaches the weights. On a GPU, or under DDP, reading it every step would
    cost a device sync or an all-reduce per step: there the first bad step is recorded on the
    device, and the flag is read every `AGREE_EVERY` steps and before any checkpoint is written.
    """

    def __init__(self, check_every: int | None = None) -> None:
        """
        Args:
            check_every: Read the loss flag every this many steps. Default: 1 on one CPU
                process, else `AGREE_EVERY`.
        """
        self.check_every, self.every = check_every, 1
        self.first_bad: Tensor | None = None  # on the device: the first non-finite step, or NONE
        self.bad_loss = math.nan

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        exact = pl_module.device.type == "cpu" and trainer.world_size == 1
        self.every = self.check_every or (1 if exact else AGREE_EVERY)
        self.first_bad = torch.tensor(NONE, device=pl_module.device)

    def on_before_backward(self, trainer: L.Trainer, pl_module, loss: Tensor) -> None:
        step = trainer.global_step
        if self.every == 1:
            value = loss.item()
            if not math.isfinite(value):
                self.bad_loss = value
                raise self.stop(trainer, step, exact=True)
            return
        bad = ~torch.isfinite(loss.detach())
        self.first_bad = torch.where(bad & (self.first_bad == NONE), step, self.first_bad)
        if (step + 1) % self.every == 0:
            self.check(trainer)

    def check(self, trainer: L.Trainer) -> None:
        """Raise if any rank saw a non-finite loss (a device read, and an all-reduce under DDP)."""
        if self.first_bad is None:
            return
        first = self.first_bad
        if trainer.world_size > 1:
            first = trainer.strategy.reduce(first.clone(), reduce_op="min")
        if int(first) != NONE:
            raise self.stop(trainer, int(first), exact=False)

    def stop(self, trainer: L.Trainer, step: int, exact: bool) -> NonFiniteLoss:
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else math.nan
        loss = f"{self.bad_loss}" if exact else "not finite"
        when = (
            "the run stopped before this step changed the weights"
            if exact
            else f"the run stopped at step {trainer.global_step} (the loss is checked every "
            f"{self.every} steps on this device)"
        )
        return NonFiniteLoss(
            f"The training loss is {loss} at step {step} (epoch {trainer.current_epoch}, learning "
            f"rate {lr:.3g}); {when}, and no checkpoint was written after it. Usual causes: a "
            f"learning rate too high for the optimizer (try --model.optimizer.lr ten times "
            f"smaller, or --model.warmup_fraction=0.05), a schedule that ends too high, or "
            f"float16 overflow (use --trainer.precision=bf16-mixed or 32)."
        )

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        self.check(trainer)  # a bad step not yet read: name it, rather than the weights
        bad = [
            k
            for k, v in checkpoint["state_dict"].items()
            if v.is_floating_point() and not torch.isfinite(v).all()
        ]
        if bad:
            raise FashionLightningError(
                f"The weights hold NaN or infinite values ({', '.join(bad[:3])}) at step "
                f"{trainer.global_step}; no checkpoint was written. Lower the learning rate "
                f"(--model.optimizer.lr) or use --trainer.precision=32."
            )


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint beside its place and renames it there: a kill or a full disk while
    writing leaves the previous file whole. (Lightning's own write goes through a temporary file
    in the system's temp folder, which is only a rename when that is on the same file system.)"""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        try:
            with open(partial, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
