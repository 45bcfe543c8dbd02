"""What `tune` and `repeat` share: an Optuna study of ordinary fits, each trial a run folder.

The study lives in Optuna's storage (a journal file by default, or a database URL), which is how
several processes (one per GPU) or machines work on one study, and how a rerun of the same command
continues it. A trial whose process died is failed by the next run (`fail_dead_trials`), so that it
is redone rather than counted.
"""

import json
import os
import re
import socket
import warnings
from collections.abc import Callable
from pathlib import Path

import optuna
from lightning.pytorch import Trainer
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from fashion_lightning.errors import FashionLightningError
from fashion_lightning.training.run_status import process_alive

MONITOR = "val/acc"  # what a study maximizes and prunes on: never a test metric
# A database storage marks a trial failed when its worker has been silent this long (seconds).
HEARTBEAT_INTERVAL, GRACE = 60, 180


def open_study(
    name: str,
    storage: str | None,
    folder: Path,
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
) -> optuna.Study:
    """The study (maximizing), created on first use, from Optuna's journal file or a database."""
    try:
        backend = open_storage(storage, folder)
        return optuna.create_study(
            study_name=name,
            storage=backend,
            direction="maximize",
            sampler=sampler,
            pruner=pruner,
            load_if_exists=True,
        )
    except Exception as e:  # SQLAlchemy, a missing driver, a file system, Optuna
        message = hide_password(" ".join(str(e).split("\n")[0].split()))
        shown = hide_password(storage) if storage else folder / "journal.log"
        raise FashionLightningError(
            f"--storage {shown} cannot be opened ({type(e).__name__}: "
            f"{message}). Give a journal file in a folder you can write to, or a database URL "
            f"Optuna accepts, e.g. sqlite:///study.db or postgresql://user:password@host/db."
        ) from None


def hide_password(text: str) -> str:
    """`text` with the password of any URL in it (scheme://user:password@host) masked."""
    return re.sub(r"(\w+://[^:/@\s]*:)[^@\s]*@", r"\1***@", text)


def open_storage(storage: str | None, folder: Path) -> optuna.storages.BaseStorage:
    if storage and "://" in storage:
        with warnings.catch_warnings():  # the heartbeat is "experimental" since Optuna 2.9
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # A trial whose worker died stops its heartbeat and is marked failed.
            return RDBStorage(storage, heartbeat_interval=HEARTBEAT_INTERVAL, grace_period=GRACE)
    path = Path(storage) if storage else folder / "journal.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    # Absolute: Optuna's lock is a symlink to this path, and a relative one would dangle (its
    # waiters then spin forever instead of sleeping and breaking a dead worker's lock).
    return JournalStorage(JournalFileBackend(str(path.resolve())))


def fail_dead_trials(study: optuna.Study) -> None:
    """Mark failed the running trials whose process on this machine is gone (killed, or stopped
    by Ctrl-C): they are kept in the study as failed, and not counted as done. A database storage
    also does this across machines, through Optuna's heartbeat."""
    fail_running(study, lambda pid: not process_alive(pid), "is gone")


def fail_own_trials(study: optuna.Study) -> None:
    """Mark failed the trials this process is running: it is stopping (a signal), so that the
    next run redoes them at once."""
    fail_running(study, lambda pid: pid == os.getpid(), "stopped")


def fail_running(study: optuna.Study, failing: Callable[[int], bool], why: str) -> None:
    host = socket.gethostname()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = trial.user_attrs
        if attrs.get("host") == host and failing(attrs.get("pid", -1)):
            try:
                study.tell(trial.number, state=TrialState.FAIL)
            except (ValueError, RuntimeError):  # another worker failed it first
                continue
            print(f"Trial {trial.number} (process {attrs['pid']} {why}) marked failed.")


def claim(trial: optuna.Trial, seed: int, run_dir: Path) -> None:
    """Record in the study which process fits the trial, where, and with which seed (what
    `fail_dead_trials` and the results tables read)."""
    attrs = {
        "seed": seed,
        "run_dir": str(run_dir),
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


def run_logger(run_dir: Path) -> str:
    """The `--trainer.logger=...` option that makes a fit's run folder `run_dir` exactly."""
    logger = {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {
            "save_dir": str(run_dir.parent),
            "name": "",
            "version": run_dir.name,
            "default_hp_metric": False,
        },
    }
    return f"--trainer.logger={json.dumps(logger)}"


def check_validates(trainer: Trainer) -> None:
    """A study needs val/acc from every trial: refuse a fit that would never validate."""
    every, epochs = trainer.check_val_every_n_epoch or 1, trainer.max_epochs
    if trainer.limit_val_batches == 0 or (epochs is not None and 0 < epochs < every):
        raise FashionLightningError(
            f"Trials would never measure {MONITOR} (--trainer.max_epochs {epochs}, "
            f"--trainer.check_val_every_n_epoch {every}, --trainer.limit_val_batches "
            f"{trainer.limit_val_batches}), and a study maximizes it. Validate at least once, "
            f"e.g. --trainer.check_val_every_n_epoch=1."
        )


def reached_score(trainer: Trainer) -> float | None:
    """The fit's best val/acc (its best checkpoint's), or the last one without checkpoints."""
    callback = trainer.checkpoint_callback
    score = callback.best_model_score if callback else None
    score = score if score is not None else trainer.callback_metrics.get(MONITOR)
    return None if score is None else float(score)
