"""A run says what it is: `status.json` in every fit's run folder.

`runs` reads it to tell a finished run from one still running, one stopped with a resumable
last.ckpt, one that diverged, failed or was killed (a `running` file whose process is gone). It is
written, atomically, only at the start of the fit, at each epoch end, after the final test and on
the way out: never per step.
"""

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from fashion_lightning.atomic import atomic_path
from fashion_lightning.errors import NonFiniteLoss
from fashion_lightning.training.resilience import Stopped

STATUS_FILE = "status.json"
# The states a status file can hold; `runs` adds `killed` (a `running` run whose process is gone)
# and `unknown` (no status file, or one it cannot read).
STATES = ("running", "finished", "stopped", "diverged", "failed")


class RunStatus(Callback):
    """Writes `status.json` into the logger's run folder (rank 0 only, and only in `fit`): state,
    pid, host, heartbeat (Unix time), when the run started, precision, device, seed, recipe, epochs
    done, fit seconds, and the final test/acc. A resumed run continues its folder's file (its start
    time and fit seconds so far are kept)."""

    def __init__(self, recipe: str | None = None) -> None:
        """
        Args:
            recipe: The recipe's name (its config file's name without `.yaml`), for `runs`.
        """
        self.recipe = recipe
        self.path: Path | None = None  # set when a fit starts with a logger
        self.status: dict[str, Any] = {}
        self._fit_start = 0.0
        self._seconds_before = 0.0  # fit seconds of the runs this one resumes

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The logger's own folder: `trainer.log_dir` broadcasts from rank 0, a collective that
        # would wait forever for the other ranks, which do not get here.
        log_dir = getattr(trainer.logger, "log_dir", None)
        if log_dir is None or not trainer.is_global_zero:
            return
        self.path = Path(log_dir) / STATUS_FILE
        before = read_status(self.path.parent) or {}
        resumed = trainer.ckpt_path is not None
        self._seconds_before = float(before.get("fit_seconds") or 0) if resumed else 0.0
        self._fit_start = time.monotonic()
        seed = os.environ.get("PL_GLOBAL_SEED")  # set by seed_everything, which the CLI calls
        self.status = {
            "state": "running",
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": before.get("started", time.time()) if resumed else time.time(),
            "precision": str(trainer.precision),
            "device": describe_device(pl_module, trainer.world_size),
            "seed": int(seed) if seed is not None else None,
            "recipe": self.recipe,
            "epochs": trainer.current_epoch,
            "fit_seconds": self._seconds_before,
            "test_acc": None,
        }
        self._write()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._update(epochs=trainer.current_epoch + 1)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._update(state="finished")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """fit's own final test (a `test` of a checkpoint never started a fit here)."""
        acc = trainer.callback_metrics.get("test/acc")
        if self.status.get("state") == "finished" and acc is not None:
            self._update(test_acc=float(acc))

    def on_exception(self, trainer: L.Trainer, pl_module, exception: BaseException) -> None:
        self._update(state=exit_state(exception), error=f"{type(exception).__name__}: {exception}")

    def _update(self, **changes: Any) -> None:
        if self.path is None:
            return
        if self.status["state"] == "running":  # the clock stops with the fit
            self.status["fit_seconds"] = self._seconds_before + time.monotonic() - self._fit_start
        self.status.update(changes)
        self._write()

    def _write(self) -> None:
        self.status["heartbeat"] = time.time()
        with atomic_path(self.path) as partial:
            partial.write_text(json.dumps(self.status, indent=1) + "\n")


def exit_state(exception: BaseException) -> str:
    """`stopped` for a signal that left a resumable last.ckpt (`resilience.Stopped`, or a second
    Ctrl-C), `diverged` for a non-finite loss, `failed` for anything else."""
    if isinstance(exception, Stopped | KeyboardInterrupt):
        return "stopped"
    return "diverged" if isinstance(exception, NonFiniteLoss) else "failed"


def describe_device(pl_module: L.LightningModule, world_size: int) -> str:
    """`cpu`, or `cuda (NVIDIA H100 80GB HBM3)`, with `x4` when several processes fit together."""
    device = pl_module.device
    name = device.type
    if device.type == "cuda":
        import torch

        name = f"cuda ({torch.cuda.get_device_name(device)})"
    return f"{name} x{world_size}" if world_size > 1 else name


def process_alive(pid: int) -> bool:
    """Whether process `pid` runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return pid > 0


def read_status(folder: Path) -> dict[str, Any] | None:
    """A run folder's status, or None when it has none or it cannot be read (a folder from before
    status files, or one cut short): such a run's state is `unknown`, never an error."""
    try:
        status = json.loads((folder / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) else None
