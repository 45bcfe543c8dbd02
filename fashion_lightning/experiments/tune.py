"""`python -m fashion_lightning tune --config configs/X.yaml`: an Optuna study of ordinary fits.

Every trial is the recipe's own `fit` (same CLI, same callbacks, its own run folder) with the values
Optuna samples applied as command-line overrides, and a seed of its own. The search space sits beside
the recipe, in `configs/X.tune.yaml`. Several processes, or machines, can work on one study at once:
they share it through Optuna's storage (a journal file by default, or a database URL), never through
anything of ours.
"""

import argparse
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from jsonargparse import ArgumentParser, Namespace
from lightning.pytorch import Trainer
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger
from optuna.trial import TrialState
from optuna_integration import PyTorchLightningPruningCallback

from fashion_lightning.atomic import atomic_path, write_atomic_csv
from fashion_lightning.cli.lightning import make_cli
from fashion_lightning.errors import FashionLightningError, NonFiniteLoss
from fashion_lightning.evaluation.plots import save_png
from fashion_lightning.experiments.study import (
    MONITOR,
    check_validates,
    claim,
    fail_dead_trials,
    open_storage,
    open_study,
    reached_score,
    run_logger,
)

# Trials build the CLI from a list of options while sys.argv holds the tune command: on purpose.
warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")

# Trials that count towards --trials: finished ones, and those other workers are running now.
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)


@dataclass
class Param:
    """One searched option: a range (`low`, `high`, `log` for a log-uniform draw, `step` for a
    grid; integers when both ends are integers) or a list of `choices`."""

    low: int | float | None = None
    high: int | float | None = None
    log: bool = False
    step: int | float | None = None
    choices: list[Any] | None = None


@dataclass
class SearchSpace:
    """A recipe's `X.tune.yaml`: the options to search and how Optuna searches them."""

    params: dict[str, Param]
    sampler: optuna.samplers.BaseSampler | None
    pruner: optuna.pruners.BasePruner | None
    path: Path


def tune(
    config: str,
    trials: int = 20,
    timeout: float | None = None,
    study: str | None = None,
    storage: str | None = None,
    space: str | None = None,
    new_study: bool = False,
    fit_args: list[str] | None = None,
) -> Path:
    """Search a recipe's hyperparameters with Optuna; every trial is an ordinary `fit`.

    Each trial fits the recipe with sampled values as overrides and seed = the recipe's seed + the
    trial's number, in lightning_logs/tune/STUDY/trial_NNNN/ (config.yaml, TensorBoard scalars and
    hparams, best and last checkpoints), maximizing val/acc (the test set is never used) and pruned
    early by Optuna's pruner. Any other option (e.g. --trainer.max_epochs=5, --data.data_dir=DIR) is
    passed to every trial's fit. Running the same command again continues the study; run it on
    several machines at once to share one study. At the end the study folder holds trials.csv,
    best.yaml (train it with `fit --config best.yaml`) and the optimization-history and
    parameter-importance plots.

    Args:
        config: The recipe to tune, e.g. configs/mlp.yaml.
        trials: How many finished (complete or pruned) trials the study should have, counted over
            every process working on it; a rerun runs only the missing ones.
        timeout: Stop starting new trials after this many seconds.
        study: The study's name. Default: the recipe's file name, e.g. `mlp`.
        storage: Where the study is kept: a journal file path, or a database URL
            (sqlite:///study.db, postgresql://..., mysql://...). Default:
            lightning_logs/tune/STUDY/journal.log, which processes on one machine or on a shared
            file system can use at once.
        space: The search space file. Default: beside the recipe, configs/X.tune.yaml for
            configs/X.yaml.
        new_study: When the study exists but was run with other fit options: start a new one
            beside it (STUDY_2, STUDY_3, ...) instead of refusing. A study's trials are ranked
            against each other, so they must all fit with the same options.
        fit_args: Options for every trial's fit (on the command line: every unknown option).
    """
    fit_args = [f"--config={config}", *(fit_args or [])]
    check_budget(trials, timeout)
    search = read_space(Path(space) if space else space_beside(Path(config)))
    base = make_cli(fit_args, run=False)  # the recipe as given: fails on bad fit options now
    check_params(search, base.config)
    check_values(search, base.parser, fit_args)
    check_validates(base.trainer)
    name = study or Path(config).name.removesuffix(".yaml").removesuffix(".yml")
    folder = Path("lightning_logs") / "tune" / name
    the_study = open_study(name, storage, folder, search.sampler, search.pruner)  # first write
    changed = changed_options(the_study, fit_args)
    if changed and not new_study:
        raise FashionLightningError(
            f"The study {name!r} was run with other fit options ({changed}); its trials are "
            f"ranked against each other, so every trial must fit alike. Rerun it with its own "
            f"options, or add --new_study to start a new study beside it."
        )
    if changed:
        name = next_free_name(name, storage)
        folder = folder.parent / name
        print(f"The study's fit options changed ({changed}): starting the new study {name!r}.")
        the_study = open_study(name, storage, folder, search.sampler, search.pruner)
    the_study.set_user_attr(FIT_OPTIONS, option_pairs(fit_args))
    fail_dead_trials(the_study)
    run_missing(the_study, Objective(fit_args, search, folder, base.config), trials, timeout)
    return write_results(the_study, folder)


FIT_OPTIONS = "fit_options"  # the study's user attribute: the options every trial fits with


def option_pairs(fit_args: list[str]) -> list[str]:
    """The fit options as `--name=value` strings, however they were typed."""
    pairs, it = [], iter(fit_args)
    for arg in it:
        if arg.startswith("--") and "=" not in arg:
            value = next(it, "")
            arg = f"{arg}={value}"
        pairs.append(arg)
    return pairs


def changed_options(study: optuna.Study, fit_args: list[str]) -> str:
    """How `fit_args` differ from the options the study's trials fitted with ("" if alike, or
    a study that recorded none: a new one)."""
    recorded = study.user_attrs.get(FIT_OPTIONS)
    given = option_pairs(fit_args)
    if recorded is None or recorded == given:
        return ""
    gone = [o for o in recorded if o not in given]
    new = [o for o in given if o not in recorded]
    parts = [f"then {' '.join(gone)}" if gone else "", f"now {' '.join(new)}" if new else ""]
    return "; ".join(p for p in parts if p) or "the same options in another order"


def next_free_name(name: str, storage: str | None) -> str:
    """NAME_2, NAME_3, ...: the first name with no study folder (and, in a database, no study)."""
    taken = set()
    if storage is not None:
        taken = set(optuna.get_all_study_names(open_storage(storage, Path("."))))
    n = 2
    while f"{name}_{n}" in taken or (Path("lightning_logs") / "tune" / f"{name}_{n}").exists():
        n += 1
    return f"{name}_{n}"


def run_missing(study: optuna.Study, objective: "Objective", trials: int, timeout: float | None):
    """Run trials until the study has `trials` finished or running ones, whoever runs them."""
    missing = trials - len(study.get_trials(deepcopy=False, states=COUNTED))
    if missing <= 0:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.optimize(
            objective,
            n_trials=missing,
            timeout=timeout,
            catch=(NonFiniteLoss,),  # a diverging trial fails; the study goes on
            callbacks=[  # a worker that died meanwhile must not hold a place in the count
                lambda study, _: fail_dead_trials(study),
                optuna.study.MaxTrialsCallback(trials, states=COUNTED),
            ],
        )


def check_budget(trials: int, timeout: float | None) -> None:
    if trials < 1:
        raise FashionLightningError(
            f"--trials {trials}: a study needs at least one trial. Give the number of finished "
            f"trials the study should have, e.g. --trials 20."
        )
    if timeout is not None and timeout <= 0:
        raise FashionLightningError(
            f"--timeout {timeout}: give a positive number of seconds, e.g. --timeout 3600, or "
            f"leave it out to stop after --trials trials."
        )


def space_beside(config: Path) -> Path:
    """configs/X.tune.yaml for configs/X.yaml."""
    return config.with_name(config.name.removesuffix(".yaml").removesuffix(".yml") + ".tune.yaml")


def read_space(path: Path) -> SearchSpace:
    """The search space file, checked by jsonargparse against `Param` and Optuna's classes."""
    if not path.is_file():
        raise FashionLightningError(
            f"No search space at {path}: write one (see README, 'Hyperparameter search'), e.g. "
            f"copy configs/mlp.tune.yaml, or name yours with --space PATH."
        )
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--params", type=dict[str, Param], required=True)
    parser.add_argument("--sampler", type=optuna.samplers.BaseSampler | None, default=None)
    parser.add_argument("--pruner", type=optuna.pruners.BasePruner | None, default=None)
    try:
        parsed = parser.instantiate(parser.parse_path(str(path)))
    except Exception as e:  # jsonargparse's message names the key and the expected type
        message = " ".join(str(e).split())
        raise FashionLightningError(
            f"The search space {path} is not valid: {message}. It needs `params:` mapping option "
            f"paths to {{low, high, log, step}} or {{choices}}, and optionally a `sampler:` and "
            f"`pruner:` (class_path, init_args) from optuna.samplers and optuna.pruners."
        ) from None
    return SearchSpace(parsed.params, parsed.sampler, parsed.pruner, path)


def check_params(search: SearchSpace, config: Namespace) -> None:
    """Every searched option exists in the recipe, and every range or list makes sense."""
    if not search.params:
        raise FashionLightningError(f"{search.path} searches nothing: list options under params.")
    for key, param in search.params.items():
        where = f"{search.path}: `{key}`"
        if key not in config:
            raise FashionLightningError(
                f"{where} is not an option of the recipe's fit. Use the dotted path of an option "
                f"that `python -m fashion_lightning fit --config ... --print_config` shows, e.g. "
                f"model.optimizer.init_args.lr."
            )
        check_param(where, param)


def check_param(where: str, param: Param) -> None:
    """A range or a list of choices, not both, that Optuna can sample from."""
    is_range = param.low is not None and param.high is not None
    if is_range == (param.choices is not None):
        raise FashionLightningError(
            f"{where} needs either `low` and `high` (a range) or `choices` (a list), not "
            f"{'both' if is_range else 'neither'}."
        )
    if is_range and param.low > param.high:
        raise FashionLightningError(
            f"{where} has low {param.low} above high {param.high}: swap them."
        )
    if is_range and param.log and param.low <= 0:
        raise FashionLightningError(
            f"{where} is searched on a log scale, so low must be above 0 (it is {param.low})."
        )
    if param.choices is not None and not param.choices:
        raise FashionLightningError(f"{where} has no choices: list at least one value.")


def check_values(search: SearchSpace, parser: ArgumentParser, fit_args: list[str]) -> None:
    """Both ends of every range and every choice are values fit accepts (types, a network's
    arguments): checked by parsing, before any trial runs or anything is written."""
    candidates = [
        (key, [p.low, p.high] if p.choices is None else p.choices)
        for key, p in search.params.items()
    ]
    parser.exit_on_error = False  # raise instead of printing: the message names the space file
    for i in range(max(len(values) for _, values in candidates)):
        overrides = [f"--{key}={json.dumps(values[i % len(values)])}" for key, values in candidates]
        try:
            parser.parse_args([*fit_args, *overrides])
        except argparse.ArgumentError as e:
            raise FashionLightningError(
                f"{search.path}: fit rejects the values {' '.join(overrides)} "
                f"({' '.join(str(e).split())}). Fix the range or choices of that option."
            ) from None


class Objective:
    """One trial: the recipe's fit with the trial's sampled values and seed, in its own folder."""

    def __init__(self, fit_args: list[str], search: SearchSpace, folder: Path, base: Namespace):
        self.fit_args = fit_args
        self.search = search
        self.folder = folder
        self.base_seed = int(base["seed_everything"])
        self.base_logger = base["trainer.logger"]  # best.yaml logs like the recipe does

    def __call__(self, trial: optuna.Trial) -> float:
        seed = self.base_seed + trial.number  # never shared by two trials of one study
        run_dir = self.folder / f"trial_{trial.number:04d}"
        claim(trial, seed, run_dir)
        cli = self.build(trial, seed, run_dir)
        pruning = StopWhenPruned(trial, monitor=MONITOR)
        cli.trainer.callbacks.append(pruning)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)  # no test: never the test set
        log_trial_hparams(cli.trainer, trial, seed)
        pruning.check_pruned()
        return best_score(cli.trainer, trial)

    def build(self, trial: optuna.Trial, seed: int, run_dir: Path) -> LightningCLI:
        """The trial's model, data and Trainer, from the recipe's CLI with the sampled values, the
        seed and a logger writing to `run_dir`; its config (with the recipe's own logger) is kept
        in the study, for best.yaml."""
        overrides = [f"--{key}={json.dumps(v)}" for key, v in sample(trial, self.search).items()]
        args = [*self.fit_args, *overrides, f"--seed_everything={seed}", run_logger(run_dir)]
        try:
            cli = make_cli(args, run=False)
        except SystemExit:  # the CLI has printed why
            raise FashionLightningError(
                f"Trial {trial.number}: fit rejected the sampled values {' '.join(overrides)}. "
                f"Fix the search space {self.search.path}."
            ) from None
        recipe = cli.config.clone()
        recipe["trainer.logger"] = self.base_logger
        trial.set_user_attr("config", cli.parser.dump(recipe, skip_none=False))
        return cli


class StopWhenPruned(PyTorchLightningPruningCallback):
    """Optuna's pruning callback, ending a pruned fit the way early stopping does (the epoch's
    checkpoints written, logs closed) rather than by an exception through Lightning's loop;
    `check_pruned()` raises `optuna.TrialPruned` once the fit has returned."""

    pruned: optuna.TrialPruned | None = None

    def on_validation_end(self, trainer: Trainer, pl_module) -> None:
        try:
            super().on_validation_end(trainer, pl_module)
        except optuna.TrialPruned as pruned:
            self.pruned = pruned
            trainer.should_stop = True

    def check_pruned(self) -> None:
        super().check_pruned()  # under DDP, the decision rank 0 recorded in the storage
        if self.pruned is not None:
            raise self.pruned


def sample(trial: optuna.Trial, search: SearchSpace) -> dict[str, Any]:
    """The trial's value for every searched option. Choices that are lists or mappings are
    sampled as their JSON text (Optuna stores only plain values), which the CLI parses back."""
    values: dict[str, Any] = {}
    for key, p in search.params.items():
        if p.choices is not None:
            plain = [
                c if c is None or isinstance(c, bool | int | float | str) else json.dumps(c)
                for c in p.choices
            ]
            value = trial.suggest_categorical(key, plain)
            values[key] = json.loads(value) if value not in p.choices else value
        elif all(isinstance(x, int) and not isinstance(x, bool) for x in (p.low, p.high)):
            values[key] = trial.suggest_int(key, p.low, p.high, step=int(p.step or 1), log=p.log)
        else:
            values[key] = trial.suggest_float(key, p.low, p.high, step=p.step, log=p.log)
    return values


def best_score(trainer: Trainer, trial: optuna.Trial) -> float:
    score = reached_score(trainer)
    if score is None:
        raise FashionLightningError(
            f"Trial {trial.number} never measured {MONITOR}: a study needs validation. Check "
            f"--data.val_size, --trainer.limit_val_batches and --trainer.check_val_every_n_epoch."
        )
    return score


def log_trial_hparams(trainer: Trainer, trial: optuna.Trial, seed: int) -> None:
    """The trial's sampled values and seed with its best val/acc, for TensorBoard's HParams tab
    (also for a pruned trial: the score it had reached)."""
    logger, score = trainer.logger, reached_score(trainer)
    if isinstance(logger, TensorBoardLogger) and score is not None:
        params = {**trial.params, "seed": seed, "trial": trial.number}
        logger.log_hyperparams(params, {"hp/val_acc": score})
        logger.finalize("success")


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: number, state, val/acc, sampled values, seed, run folder, duration."""
    table = study.trials_dataframe(
        attrs=("number", "state", "value", "params", "user_attrs", "duration")
    )
    if table.empty:
        return table
    table = table.rename(
        columns={"value": MONITOR, "user_attrs_seed": "seed", "user_attrs_run_dir": "run_dir"}
    )
    table["duration"] = table["duration"].dt.total_seconds().round(1)
    return table.drop(columns=[c for c in table.columns if c.startswith("user_attrs_")])


def write_results(study: optuna.Study, folder: Path) -> Path:
    """trials.csv, best.yaml and the two plots in the study folder, each written aside and
    moved into place (several workers may finish at once); their paths printed."""
    folder.mkdir(parents=True, exist_ok=True)
    table = trials_table(study)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(index=False))
    written = [folder / "trials.csv"]
    write_atomic_csv(table, written[0])
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if complete:
        best = study.best_trial
        print(f"Best trial: {best.number}, val/acc {best.value:.4f}, {best.params}")
        with atomic_path(folder / "best.yaml") as partial:
            partial.write_text(best.user_attrs["config"])
        written.append(folder / "best.yaml")
        written += write_plots(study, folder)
    else:
        print("No trial has completed yet: no best.yaml or plots.")
    for path in written:
        print(f"Written: {path}")
    return folder


def write_plots(study: optuna.Study, folder: Path) -> list[Path]:
    """Optuna's optimization history and parameter importances (matplotlib backend)."""
    from optuna.visualization import matplotlib as optuna_plots

    plots = {"history.png": optuna_plots.plot_optimization_history}
    if len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) > 1:
        plots["importance.png"] = optuna_plots.plot_param_importances  # needs two trials
    written = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # A few trials that tie: the importances are equal, which the picture shows already.
        warnings.filterwarnings("ignore", "Target and region quantiles select the same set")
        for name, plot in plots.items():
            try:
                figure = plot(study, target_name=MONITOR).figure
            except (ValueError, RuntimeError) as e:  # e.g. no parameter varied
                print(f"{name} not drawn: {e}")
                continue
            figure.set_size_inches(8, 5)
            figure.tight_layout()
            written.append(save_png(figure, folder / name))
    return written
