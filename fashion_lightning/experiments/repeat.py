"""`python -m fashion_lightning repeat --config configs/X.yaml --seeds N`: a study of seeds.

The same recipe fitted at N seeds, each an ordinary `fit` (final test included) in its own run
folder, so that a recipe's figure is a mean ± std rather than one draw. It is an Optuna study like
`tune`'s (`study.py`), with the seeds queued explicitly instead of sampled: several processes
share one repeat, a rerun fits only the missing seeds, and a seed whose process was killed is
retried with the same seed, resuming from its last.ckpt when it wrote one.
"""

import shutil
import warnings
from pathlib import Path

import optuna
import pandas as pd
from jsonargparse import Namespace
from optuna.trial import TrialState

from fashion_lightning.atomic import atomic_path
from fashion_lightning.cli.lightning import make_cli
from fashion_lightning.errors import FashionLightningError, NonFiniteLoss
from fashion_lightning.experiments.runs import mean_std
from fashion_lightning.experiments.study import (
    check_validates,
    claim,
    fail_dead_trials,
    fail_own_trials,
    open_study,
    reached_score,
    run_logger,
)
from fashion_lightning.training.resilience import Stopped

# Trials that hold a seed: queued, being fitted, or done. A failed one (killed, diverged) does not.
HOLDING = (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE)
ACCURACIES = ("test/acc", "val/acc")


class SeedTaken(Exception):
    """A trial found its seed already fitted or being fitted (two workers queued it at once)."""


def repeat(
    config: str,
    seeds: int = 5,
    name: str | None = None,
    storage: str | None = None,
    fit_args: list[str] | None = None,
) -> pd.DataFrame:
    """Fit one recipe at several seeds and print the mean ± std of its accuracies.

    Seed k of N fits with seed_everything = the recipe's seed + k (the validation split,
    --data.seed, stays the same), in lightning_logs/repeat/NAME/seed_S/: an ordinary run folder
    with its final test. Any other option (e.g. --trainer.max_epochs=5) is passed to every fit.
    Running the same command again fits only the missing seeds; run it in several processes (one
    per GPU) to share the work. At the end it prints the mean and sample std of test/acc and
    val/acc and writes lightning_logs/repeat/NAME/summary.csv.

    Args:
        config: The recipe to repeat, e.g. configs/mlp.yaml.
        seeds: How many seeds to fit.
        name: The repeat's name. Default: the recipe's file name, e.g. `mlp`.
        storage: Where the repeat's study is kept: a journal file, or a database URL
            (sqlite:///repeat.db, postgresql://...). Default:
            lightning_logs/repeat/NAME/journal.log.
        fit_args: Options for every seed's fit (on the command line: every unknown option).
    """
    if seeds < 1:
        raise FashionLightningError(
            f"--seeds {seeds}: a repeat needs at least one seed; give how many seeds to fit, "
            f"e.g. --seeds 5 (seed_everything = the recipe's seed + 0, 1, ..., 4)."
        )
    fit_args = [f"--config={config}", *(fit_args or [])]
    base = make_cli(fit_args, run=False)  # the recipe as given: fails on bad fit options now
    check_validates(base.trainer)
    wanted = recipe_seeds(base.config, seeds)
    name = name or Path(config).name.removesuffix(".yaml").removesuffix(".yml")
    folder = Path("lightning_logs") / "repeat" / name
    study = open_study(name, storage, folder)  # the first thing written
    fail_dead_trials(study)
    queue_missing(study, wanted)
    try:
        fit_queued(study, SeedFit(fit_args, folder))
    except Stopped:  # a signal stopped a seed's fit, which wrote its last.ckpt: the next run
        fail_own_trials(study)  # resumes it
        raise
    return summarize(study, wanted, folder)


def recipe_seeds(config: Namespace, seeds: int) -> list[int]:
    """Seed k of N: seed_everything = the recipe's own seed + k (the validation split stays)."""
    first = int(config["seed_everything"])
    return list(range(first, first + seeds))


def queue_missing(study: optuna.Study, wanted: list[int]) -> None:
    """Queue every wanted seed that no trial holds (never fitted, or its fit failed)."""
    holding = study.get_trials(deepcopy=False, states=HOLDING)
    held = {t.user_attrs.get("seed") for t in holding}
    for seed in wanted:
        if seed not in held:
            study.enqueue_trial({}, user_attrs={"seed": seed})


def fit_queued(study: optuna.Study, objective: "SeedFit") -> None:
    """Fit queued seeds until none is left, whichever process takes them."""
    queued = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
    if not queued:
        return

    def stop_when_done(study: optuna.Study, _) -> None:
        fail_dead_trials(study)
        if not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            study.stop()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.optimize(
            objective, n_trials=queued, catch=(NonFiniteLoss, SeedTaken), callbacks=[stop_when_done]
        )


class SeedFit:
    """One seed: the recipe's whole `fit` (its final test included) in the seed's run folder."""

    def __init__(self, fit_args: list[str], folder: Path) -> None:
        self.fit_args = fit_args
        self.folder = folder

    def __call__(self, trial: optuna.Trial) -> float:
        seed = self.take_seed(trial)
        run_dir = self.folder / f"seed_{seed}"
        claim(trial, seed, run_dir)
        args = ["fit", *self.fit_args, f"--seed_everything={seed}", run_logger(run_dir)]
        last = run_dir / "checkpoints" / "last.ckpt"
        if last.is_file():  # a killed attempt of this seed: resume it exactly
            args.append(f"--ckpt_path={last}")
        else:  # nothing to resume: its partial folder goes
            shutil.rmtree(run_dir, ignore_errors=True)
        cli = make_cli(args)
        test = cli.trainer.callback_metrics.get("test/acc")
        trial.set_user_attr("test_acc", None if test is None else float(test))
        score = reached_score(cli.trainer)
        if score is None:
            raise FashionLightningError(f"Seed {seed} never measured val/acc.")
        return score

    @staticmethod
    def take_seed(trial: optuna.Trial) -> int:
        """The seed queued with this trial; refused if another trial has taken it meanwhile, or
        if nothing was queued (another process emptied the queue first)."""
        seed = trial.user_attrs.get("seed")
        if seed is None:
            raise SeedTaken("no seed was queued for this trial")
        others = trial.study.get_trials(
            deepcopy=False, states=(TrialState.RUNNING, TrialState.COMPLETE)
        )
        if any(t.number != trial.number and t.user_attrs.get("seed") == seed for t in others):
            raise SeedTaken(f"seed {seed} is fitted by another trial")
        return seed


def summarize(study: optuna.Study, wanted: list[int], folder: Path) -> pd.DataFrame:
    """Print the mean ± std of test/acc and val/acc over the seeds done; write summary.csv (one
    row per seed, then the mean and the sample std)."""
    done = {t.user_attrs["seed"]: t for t in study.get_trials(states=(TrialState.COMPLETE,))}
    rows = [seed_row(done[seed]) for seed in wanted if seed in done]
    table = pd.DataFrame(rows, columns=["seed", "run", *ACCURACIES])
    missing = ", ".join(str(seed) for seed in wanted if seed not in done)
    note = f" (missing: {missing}; run the same command again)" if missing else ""
    print(f"{study.study_name}: {len(table)} of {len(wanted)} seeds done{note}")
    stats = {metric: mean_std(table[metric]) for metric in ACCURACIES}
    for metric, (mean, std) in stats.items():
        print(f"{metric}: {mean:.2%} ± {std:.2%} (n={len(table)}, sample std)")
    summary = pd.concat([table, pd.DataFrame({"seed": ["mean", "std"], **stats})])
    with atomic_path(folder / "summary.csv") as partial:
        summary.to_csv(partial, index=False, float_format="%.6f")
    print(f"Written: {folder / 'summary.csv'}")
    return summary


def seed_row(trial: optuna.trial.FrozenTrial) -> dict:
    attrs = trial.user_attrs
    return {
        "seed": attrs["seed"],
        "run": attrs["run_dir"],
        "val/acc": trial.value,
        "test/acc": attrs.get("test_acc"),
    }
