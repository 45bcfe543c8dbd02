"""`tune`: Optuna studies whose trials are tiny fits on the synthetic data."""

import io
import os
import signal
import subprocess
import time
from contextlib import redirect_stdout
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from conftest import COMMAND, assert_user_error, config, enter_run_dir, scalars, tiny_options
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from fashion_lightning.cli.lightning import make_cli
from fashion_lightning.cli.main import cli_main
from fashion_lightning.experiments.tune import check_params, check_values, read_space, space_beside

REPO = Path(__file__).resolve().parents[1]
# Learning rate 0 leaves the network at chance (about 0.1 on 10 classes) while 1e-3 and 3e-3 learn the
# synthetic bands in one epoch: the threshold pruner stops exactly the lr=0 trial, at its first
# validation. The brute-force sampler tries each choice once, so 3 trials see all three.
PRUNING_SPACE = """
params:
  model.optimizer.init_args.lr: {choices: [0.0, 0.001, 0.003]}
sampler: {class_path: optuna.samplers.BruteForceSampler, init_args: {seed: 0}}
pruner: {class_path: optuna.pruners.ThresholdPruner, init_args: {lower: 0.5}}
"""


def load_study(folder: Path, name: str = "mlp") -> optuna.Study:
    path = (folder / "tune" / name / "journal.log").resolve()  # absolute, as Optuna needs
    storage = JournalStorage(JournalFileBackend(str(path)))
    return optuna.load_study(study_name=name, storage=storage)


def states(study: optuna.Study) -> list[str]:
    return [t.state.name for t in study.trials]


@pytest.fixture(scope="module")
def pruned_study(fake_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A finished 3-trial study of the MLP, one trial pruned, shared by the tests that read it;
    returns its folder and what it printed. Each test runs in that folder (`in_study`)."""
    folder = tmp_path_factory.mktemp("study")
    (folder / "space.yaml").write_text(PRUNING_SPACE)
    with pytest.MonkeyPatch.context() as monkeypatch, redirect_stdout(io.StringIO()) as out:
        enter_run_dir(monkeypatch, folder)
        one_epoch = ["--trainer.max_epochs=1", "--trainer.check_val_every_n_epoch=1"]
        options = [*tiny_options(fake_data_dir), *one_epoch]  # one validation: enough to prune
        cli_main(["tune", config("mlp"), "--space=space.yaml", "--trials=3", *options])
    return folder, out.getvalue()


@pytest.fixture
def in_study(pruned_study: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> str:
    """Run in the shared study's folder; returns what the study printed."""
    enter_run_dir(monkeypatch, pruned_study[0])
    return pruned_study[1]


def test_study_prunes_and_records_every_trial(in_study: str) -> None:
    study = load_study(Path("lightning_logs"))
    assert sorted(states(study)) == ["COMPLETE", "COMPLETE", "PRUNED"]
    (pruned,) = study.get_trials(states=(TrialState.PRUNED,))
    assert pruned.params["model.optimizer.init_args.lr"] == 0.0
    assert pruned.intermediate_values[0] < 0.5  # pruned on a value it reported itself
    for trial in study.trials:
        run = Path(trial.user_attrs["run_dir"])
        assert run == Path("lightning_logs/tune/mlp") / f"trial_{trial.number:04d}"
        recorded = yaml.safe_load((run / "config.yaml").read_text())
        assert recorded["seed_everything"] == trial.user_attrs["seed"] == trial.number
        lr = recorded["model"]["optimizer"]["init_args"]["lr"]
        assert lr == trial.params["model.optimizer.init_args.lr"]
        logged = scalars(run)
        assert "val/acc" in logged and "hp/val_acc" in logged
        assert not any(tag.startswith("test/") for tag in logged)  # the test set stays unseen
        assert (run / "checkpoints" / "last.ckpt").is_file()
    best = Path(study.best_trial.user_attrs["run_dir"]) / "checkpoints"
    assert any(p.name.startswith("epoch=") for p in best.iterdir())


def test_study_writes_table_best_config_and_plots(in_study: str) -> None:
    folder = Path("lightning_logs/tune/mlp")
    table = pd.read_csv(folder / "trials.csv")
    assert list(table["number"]) == [0, 1, 2] and list(table["seed"]) == [0, 1, 2]
    assert sorted(table["state"]) == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert {"val/acc", "run_dir", "params_model.optimizer.init_args.lr"} <= set(table.columns)
    for name in ("trials.csv", "best.yaml", "history.png", "importance.png"):
        assert (folder / name).stat().st_size > 0
        assert f"Written: {folder / name}" in in_study
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no partial files
    best = yaml.safe_load((folder / "best.yaml").read_text())
    assert best["trainer"]["logger"]["init_args"]["name"] == "lightning_logs"  # not a trial's
    assert best["model"]["optimizer"]["init_args"]["lr"] > 0


def test_best_yaml_trains_as_it_is(in_study: str) -> None:
    cli = cli_main(["fit", "--config=lightning_logs/tune/mlp/best.yaml"])
    log_dir = Path(cli.trainer.log_dir)
    assert log_dir.parent.resolve() == Path.cwd() / "lightning_logs"
    assert (log_dir / "checkpoints" / "last.ckpt").is_file()
    assert "test/acc" in cli.trainer.callback_metrics


def tune_command(tiny_args: list[str], trials: int) -> list[str]:
    return [
        *COMMAND,
        "tune",
        config("mlp"),
        f"--trials={trials}",
        *tiny_args,
    ]


def start(command: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def fitting(logs: Path) -> bool:
    """Whether a worker is inside a trial's fit (its config recorded, the trial running)."""
    if not (logs / "tune/mlp/journal.log").exists():
        return False
    return any(
        t.state == TrialState.RUNNING and "config" in t.user_attrs for t in load_study(logs).trials
    )


def wait_until_fitting(worker: subprocess.Popen, logs: Path) -> None:
    deadline = time.monotonic() + 120
    while not fitting(logs):
        assert worker.poll() is None and time.monotonic() < deadline, worker.stdout.read()
        time.sleep(0.1)


@pytest.mark.slow  # a real worker process, killed mid-fit
def test_rerun_continues_the_study_and_fails_a_killed_trial(tiny_args, run_dir, capsys) -> None:
    worker = start(tune_command(tiny_args, trials=2), run_dir)
    wait_until_fitting(worker, run_dir / "lightning_logs")  # killed mid-fit, between two writes
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    assert states(load_study(run_dir / "lightning_logs")) == ["RUNNING"]  # left behind

    cli_main(tune_command(tiny_args, trials=2)[3:])  # the same command, run again
    assert "Trial 0 (process" in capsys.readouterr().out
    study = load_study(run_dir / "lightning_logs")
    assert states(study) == ["FAIL", "COMPLETE", "COMPLETE"]
    cli_main(tune_command(tiny_args, trials=2)[3:])  # the study has its 2 trials: no more
    assert len(load_study(run_dir / "lightning_logs").trials) == 3


def test_a_rerun_with_other_fit_options_is_refused_or_starts_a_new_study(
    tiny_args, run_dir, capsys
) -> None:
    """Trials are ranked against each other: a study never mixes trials fitted differently."""
    tune = ["tune", config("mlp"), "--trials=1", *tiny_args, "--trainer.max_epochs=1"]
    cli_main([*tune, "--trainer.limit_train_batches", "4"])
    changed = [*tune, "--trials=2", "--trainer.limit_train_batches=2"]
    words = [
        "--trainer.limit_train_batches=4",
        "now --trainer.limit_train_batches=2",
        "--new_study",
    ]
    assert_user_error(changed, capsys, *words)
    assert len(load_study(run_dir / "lightning_logs").trials) == 1  # no trial ran
    cli_main([*changed, "--new_study"])
    assert "starting the new study 'mlp_2'" in capsys.readouterr().out
    assert len(load_study(run_dir / "lightning_logs", "mlp_2").trials) == 2
    assert len(load_study(run_dir / "lightning_logs").trials) == 1


@pytest.mark.slow  # a second, real worker process
def test_two_processes_share_one_study(tiny_args: list[str], run_dir: Path) -> None:
    command = tune_command([*tiny_args, "--trainer.max_epochs=1"], trials=4)
    worker = start(command, run_dir)
    wait_until_fitting(worker, run_dir / "lightning_logs")
    cli_main(command[3:])  # this process is the second worker, while the first one runs
    output = worker.communicate(timeout=300)[0]
    assert worker.returncode == 0, output
    trials = load_study(run_dir / "lightning_logs").trials
    assert [t.number for t in trials] == list(range(len(trials)))
    assert 4 <= len(trials) <= 5  # a worker may start one while the other finishes the 4th
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    seeds = [t.user_attrs["seed"] for t in trials]
    runs = [Path(run_dir, t.user_attrs["run_dir"]) for t in trials]
    assert len(set(seeds)) == len(set(runs)) == len(trials)
    assert all((run / "config.yaml").is_file() for run in runs)
    assert {t.user_attrs["pid"] for t in trials} == {worker.pid, os.getpid()}  # both did trials


BAD_SPACES = {
    "unknown path": (
        "params:\n  model.optimizer.init_args.lrr: {low: 0.1, high: 1}\n",
        "`model.optimizer.init_args.lrr` is not an option",
    ),
    "low above high": (
        "params:\n  model.optimizer.init_args.lr: {low: 0.1, high: 0.01}\n",
        "has low 0.1 above high 0.01",
    ),
    "neither range nor choices": (
        "params:\n  model.optimizer.init_args.lr: {low: 0.1}\n",
        "not neither",
    ),
    "wrong type": (
        "params:\n  model.net.init_args.hidden_sizes: {low: 64, high: 256}\n",
        "fit rejects the values --model.net.init_args.hidden_sizes=64",
    ),
    "misspelt field": (
        "params:\n  model.optimizer.init_args.lr: {lo: 0.1, high: 1}\n",
        "is not valid",
    ),
}


@pytest.mark.parametrize(
    "option, message",
    [
        ("--trials=0", "needs at least one trial"),
        ("--timeout=-1", "give a positive number of seconds"),
        ("--storage=sqlite:////nonexistent_folder/study.db", "cannot be opened"),
        ("--storage=nosuchdb://host/db", "cannot be opened"),
        ("--trainer.limit_val_batches=0", "Trials would never measure val/acc"),
        ("--space=missing.yaml", "No search space at missing.yaml"),
        *[(f"--space={{tmp}}/{name}.yaml", message) for name, (_, message) in BAD_SPACES.items()],
    ],
    ids=[
        "trials 0",
        "timeout",
        "sqlite folder",
        "unknown database",
        "no validation",
        "no space",
        *BAD_SPACES,
    ],
)
def test_bad_input_is_one_paragraph_and_writes_nothing(
    option: str, message: str, tiny_args: list[str], tmp_path: Path, capsys
) -> None:
    spaces = tmp_path / "spaces"
    spaces.mkdir()
    for name, (text, _) in BAD_SPACES.items():
        (spaces / f"{name}.yaml").write_text(text)
    args = ["tune", config("mlp"), option.format(tmp=spaces), *tiny_args]
    err = assert_user_error(args, capsys, message)
    assert err.startswith("error: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spaces"]  # no lightning_logs/


def test_every_shipped_recipe_has_a_search_space(tiny_args: list[str]) -> None:
    for recipe in sorted((REPO / "configs").glob("*.yaml")):
        if not recipe.name.endswith(".tune.yaml"):
            search = read_space(space_beside(recipe))
            fit_args = [f"--config={recipe}", *tiny_args]
            base = make_cli(fit_args, run=False)
            check_params(search, base.config)
            check_values(search, base.parser, fit_args)
            assert search.pruner is not None and len(search.params) >= 3
