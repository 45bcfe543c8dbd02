"""`repeat`: a recipe fitted at several seeds, resumable after a stop or a kill."""

import io
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import config, flat, tiny_options
from test_resilience import send_signal

from fashion_lightning.cli.main import cli_main
from fashion_lightning.experiments.study import open_storage

FOLDER = Path("lightning_logs/repeat/mlp")


def seeds_by_state(folder: Path) -> list[tuple[int, str]]:
    """(seed, state) of every trial of the repeat, in trial order."""
    import optuna

    study = optuna.load_study(study_name="mlp", storage=open_storage(None, folder))
    return [(t.user_attrs.get("seed"), t.state.name) for t in study.trials]


def check_seed_folders(seeds: list[int], folder: Path = FOLDER) -> None:
    """Each seed's folder was fitted with its own seed and ended with its final test."""
    for seed in seeds:
        run = folder / f"seed_{seed}"
        assert yaml.safe_load((run / "config.yaml").read_text())["seed_everything"] == seed
        status = json.loads((run / "status.json").read_text())
        assert status["state"] == "finished" and status["seed"] == seed
        assert status["test_acc"] is not None


def test_a_stopped_seed_is_refitted_with_its_own_seed(tiny_args: list[str], run_dir: Path):
    command = ["repeat", config("mlp"), "--seeds=3", *tiny_args]
    with pytest.raises(SystemExit) as stop, redirect_stdout(io.StringIO()):
        cli_main([*command, send_signal(2, signal.SIGTERM)])  # the first seed stops at step 2
    assert stop.value.code == 143
    assert (FOLDER / "seed_0/checkpoints/last.ckpt").is_file()
    assert seeds_by_state(FOLDER) == [(0, "FAIL"), (1, "WAITING"), (2, "WAITING")]

    with redirect_stdout(io.StringIO()) as out:
        cli_main(command)  # the same repeat again, not stopped this time
    done = [(0, "FAIL"), (1, "COMPLETE"), (2, "COMPLETE"), (0, "COMPLETE")]
    assert seeds_by_state(FOLDER) == done
    check_seed_folders([0, 1, 2])
    assert "3 of 3 seeds done" in out.getvalue()
    summary = pd.read_csv(FOLDER / "summary.csv")
    assert list(summary["seed"]) == ["0", "1", "2", "mean", "std"]

    with redirect_stdout(io.StringIO()):
        cli_main(command)  # nothing is missing: nothing is fitted
    assert len(seeds_by_state(FOLDER)) == 4


def test_seeds_0_is_one_paragraph_and_writes_nothing(tiny_args, run_dir, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["repeat", config("mlp"), "--seeds=0", *tiny_args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--seeds 0: a repeat needs at least one seed" in flat(err)
    assert list(run_dir.iterdir()) == []


def start_repeat(command: list[str], folder: Path) -> subprocess.Popen:
    """The repeat in a process of its own, able to import the tests' callbacks."""
    path = os.pathsep.join([str(Path(__file__).parent), *sys.path])
    env = {**os.environ, "PYTHONPATH": path}
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    return subprocess.Popen(command, cwd=folder, env=env, **pipes)


@pytest.mark.slow
def test_a_killed_repeat_fits_only_the_missing_seeds(fake_data_dir: Path, run_dir: Path) -> None:
    """kill -9 a repeat while it fits its second seed; the same command again fits that seed
    (with its own seed) and the third, not the first."""
    slow = '--trainer.callbacks+={"class_path": "test_resilience.SlowDown"}'
    options = [*tiny_options(fake_data_dir), "--data.batch_size=4", slow]
    command = [sys.executable, "-m", "fashion_lightning", "repeat", config("mlp"), "--seeds=3"]
    command += options
    worker = start_repeat(command, run_dir)
    deadline = time.monotonic() + 180
    while not (run_dir / FOLDER / "seed_1/checkpoints").is_dir():
        assert worker.poll() is None and time.monotonic() < deadline, worker.stdout.read()
        time.sleep(0.1)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    assert seeds_by_state(run_dir / FOLDER)[:2] == [(0, "COMPLETE"), (1, "RUNNING")]

    rerun = start_repeat(command, run_dir)
    output = rerun.communicate(timeout=300)[0]
    assert rerun.returncode == 0, output
    assert "Trial 1 (process" in output
    states = seeds_by_state(run_dir / FOLDER)
    assert states == [(0, "COMPLETE"), (1, "FAIL"), (2, "COMPLETE"), (1, "COMPLETE")]
    check_seed_folders([0, 1, 2], run_dir / FOLDER)
