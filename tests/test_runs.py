"""`runs` over a folder holding every kind of run, and the status file each fit writes."""

import io
import json
import shutil
import signal
from contextlib import redirect_stdout, suppress
from pathlib import Path

import pandas as pd
import pytest
from conftest import config, enter_run_dir, flat, scalars, tiny_options
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_resilience import send_signal

from fashion_lightning.cli.main import cli_main
from fashion_lightning.experiments import history
from fashion_lightning.experiments import runs as runs_module
from fashion_lightning.training.run_status import STATUS_FILE

ONE_EPOCH = "--trainer.max_epochs=1"
DIVERGING = [
    "--model.optimizer=torch.optim.SGD",
    "--model.optimizer.lr=1e12",
    "--trainer.max_epochs=5",
]


def quietly(args: list[str]) -> str:
    """Run the CLI; what it printed. A fit that stops (signal, divergence) is expected here."""
    with redirect_stdout(io.StringIO()) as out, suppress(SystemExit):
        cli_main(args)
    return out.getvalue()


@pytest.fixture(scope="module")
def zoo(fake_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A folder with a repeat of 3 seeds, a 2-trial tune study, and fits that finished (two
    learning rates), were stopped by SIGTERM, diverged, and two that say nothing (a folder from
    before status files, and one whose status file was cut short). Returns it and what the
    repeat printed."""
    folder = tmp_path_factory.mktemp("zoo")
    tiny = tiny_options(fake_data_dir)
    with pytest.MonkeyPatch.context() as monkeypatch:
        enter_run_dir(monkeypatch, folder)
        printed = quietly(["repeat", config("mlp"), "--seeds=3", *tiny, ONE_EPOCH])
        quietly(["tune", config("mlp"), "--trials=2", *tiny, ONE_EPOCH])
        for extra in (["--model.optimizer.lr=5e-3"], [send_signal(2, signal.SIGTERM)], DIVERGING):
            quietly(["fit", config("mlp"), *tiny, ONE_EPOCH, *extra])  # version_0, 1, 2
        logs = folder / "lightning_logs"
        for version, damage in ((3, lambda p: p.unlink()), (4, lambda p: p.write_text('{"sta'))):
            shutil.copytree(logs / "version_0", logs / f"version_{version}")
            damage(logs / f"version_{version}" / STATUS_FILE)
    return folder, printed


@pytest.fixture
def in_zoo(zoo: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> str:
    enter_run_dir(monkeypatch, zoo[0])
    return zoo[1]


def table_of(*args: str) -> pd.DataFrame:
    with redirect_stdout(io.StringIO()):
        return cli_main(["runs", *args])


def test_every_kind_of_run_is_a_row_with_a_truthful_state(in_zoo: str) -> None:
    table = table_of().set_index("run")
    assert list(table["state"].items()) == [
        ("repeat/mlp/seed_0", "finished"),
        ("repeat/mlp/seed_1", "finished"),
        ("repeat/mlp/seed_2", "finished"),
        ("tune/mlp/trial_0000", "finished"),
        ("tune/mlp/trial_0001", "finished"),
        ("version_0", "finished"),
        ("version_1", "stopped"),
        ("version_2", "diverged"),
        ("version_3", "unknown"),
        ("version_4", "unknown"),
    ]
    # The differing settings, found by diffing config.yaml: seeds, learning rates, optimizers.
    assert {"seed_everything", "model.optimizer.lr", "model.optimizer"} <= set(table.columns)
    assert not [c for c in table.columns if c.startswith("trainer.logger")]
    assert list(table.loc["repeat/mlp/seed_0":"repeat/mlp/seed_2", "seed_everything"]) == [0, 1, 2]
    assert (table["net"] == "MLP").all() and (table["recipe"].iloc[:8] == "mlp").all()
    finished = table[table["state"] == "finished"]
    assert finished["val/acc"].between(0, 1).all() and (finished["epochs"] == 1).all()
    assert finished.loc[["repeat/mlp/seed_0", "version_0"], "test/acc"].notna().all()
    assert finished.loc["tune/mlp/trial_0000":"tune/mlp/trial_0001", "test/acc"].isna().all()
    # A folder from before status files still shows its test/acc, from its event files.
    assert table.loc["version_3", "test/acc"] == table.loc["version_0", "test/acc"]
    assert table.loc["version_1", "epochs"] == 0  # stopped at step 2, inside its first epoch


def test_status_file_of_a_finished_fit(in_zoo: str) -> None:
    status = json.loads(Path("lightning_logs/version_0", STATUS_FILE).read_text())
    assert status["state"] == "finished" and status["recipe"] == "mlp"
    assert (status["precision"], status["device"], status["seed"]) == ("32-true", "cpu", 0)
    assert status["epochs"] == 1 and 0 < status["fit_seconds"] < status["heartbeat"]
    logged = scalars("lightning_logs/version_0")
    assert status["test_acc"] == pytest.approx(logged["test/acc"][-1])
    assert status["heartbeat"] >= status["started"]


def test_where_compares_numbers_by_value(in_zoo: str) -> None:
    copies = ["version_0", "version_3", "version_4"]  # the two without status are copies
    assert list(table_of("--where", "model.optimizer.lr=5e-3")["run"]) == copies
    full_key = "--where=model.optimizer.init_args.lr=0.005"  # the full path works too
    assert list(table_of(full_key)["run"]) == copies
    both = table_of("--where", "state=finished", "--where", "recipe=mlp", "--where", "epochs=1")
    assert len(both) == 6  # the repeat, the study and version_0
    # Among the repeat's seeds only the seed differs: the settings shown are found again.
    seeds = table_of("--root=lightning_logs/repeat")
    assert [c for c in seeds.columns if "." in c or c == "seed_everything"] == ["seed_everything"]


def test_group_by_gives_the_mean_and_std_repeat_printed(in_zoo: str, tmp_path: Path) -> None:
    summary = pd.read_csv("lightning_logs/repeat/mlp/summary.csv").set_index("seed")
    out = tmp_path / "groups.csv"
    table_of("--root=lightning_logs/repeat", "--group_by=recipe", f"--out={out}")
    (group,) = pd.read_csv(out).to_dict("records")
    assert group["n"] == 3
    for metric in ("test/acc", "val/acc"):
        mean, std = group[f"{metric} mean"], group[f"{metric} std"]
        assert mean == pytest.approx(float(summary.loc["mean", metric]), abs=1e-6)
        assert std == pytest.approx(float(summary.loc["std", metric]), abs=1e-6)
        assert f"{metric}: {mean:.2%} ± {std:.2%} (n=3, sample std)" in in_zoo
    finished = ["--where=state=finished", "--group_by=model.optimizer.lr"]
    single = table_of(*finished).set_index("model.optimizer.lr")
    assert single.loc[0.005, "n"] == 1 and pd.isna(single.loc[0.005, "test/acc std"])


def test_sort_columns_and_every_output_format(in_zoo: str, tmp_path: Path) -> None:
    # The README's forms: a value that starts with a dash, given apart from its option.
    options = ["--where=state=finished", "--sort", "-val/acc", "--columns=run", "--columns=val/acc"]
    table = table_of(*options)
    assert list(table.columns) == ["run", "val/acc"]
    assert list(table["val/acc"]) == sorted(table["val/acc"], reverse=True)
    for suffix in (".csv", ".json", ".md"):
        table_of(*options, f"--out={tmp_path / ('t' + suffix)}")
    assert list(pd.read_csv(tmp_path / "t.csv")["run"]) == list(table["run"])
    assert [r["run"] for r in json.loads((tmp_path / "t.json").read_text())] == list(table["run"])
    markdown = (tmp_path / "t.md").read_text().splitlines()
    assert markdown[0] == "| run | val/acc |" and len(markdown) == 2 + len(table)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial files


def test_plot_has_a_row_per_group(in_zoo: str, tmp_path: Path) -> None:
    from PIL import Image

    png = tmp_path / "runs.png"
    options = ["--where=state=finished", "--group_by=model.optimizer.lr"]
    groups = table_of(*options, f"--plot={png}")
    assert len(groups) >= 2  # lr 0.001 (the repeat), 0.005 (version_0), and tune's
    assert Image.open(png).size == (1100, round(100 * (0.9 + 1.6 * len(groups))))


def test_hparams_of_a_repeat_seed_hold_seed_and_both_accuracies(in_zoo: str) -> None:
    events = EventAccumulator("lightning_logs/repeat/mlp/seed_1")
    events.Reload()
    logged = set(events.Tags()["scalars"])
    assert {"hp/test_acc", "hp/val_acc"} <= logged
    start = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    assert b"seed" in start and b"model/net" in start


@pytest.mark.slow
def test_a_killed_run_is_shown_as_killed(fake_data_dir, tmp_path, monkeypatch) -> None:
    """Kill -9 a real fit mid-epoch: its status still says running, with a pid that is gone."""
    from test_resilience import finish, start_fit, wait_for

    process = start_fit(tmp_path, fake_data_dir)
    wait_for(tmp_path / "lightning_logs/version_0/checkpoints/last.ckpt", process)
    process.send_signal(signal.SIGKILL)
    finish(process)
    enter_run_dir(monkeypatch, tmp_path)
    assert list(table_of()["state"]) == ["running"]  # its heartbeat is recent
    monkeypatch.setattr(runs_module, "STALE_SECONDS", 0)
    assert list(table_of()["state"]) == ["killed"]


BAD_INPUT = [
    (["--root=nothing_here"], "--root nothing_here: no runs there"),
    (["--where=model.optimizer.lrr=1"], "--where model.optimizer.lrr: no run has that column"),
    (["--where=model.optimizer.lr"], "--where model.optimizer.lr: write it KEY=VALUE"),
    (["--sort=speed"], "--sort speed: no run has that column"),
    (["--group_by=recipe,nett"], "--group_by nett: no run has that column or config key. Did"),
    (["--columns=run", "--columns=tset/acc"], "Did you mean test/acc"),
    (["--out=table.xlsx"], "--out table.xlsx: the suffix says the format"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUT, ids=[a[0] for a, _ in BAD_INPUT])
def test_bad_input_is_one_paragraph_and_writes_nothing(in_zoo, args, message, capsys) -> None:
    before = sorted(Path(".").rglob("*"))
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["runs", "--out=t.csv", "--plot=runs.png", *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err and message in flat(err)
    assert sorted(Path(".").rglob("*")) == before


def test_a_run_that_never_validated_has_no_val_acc(tmp_path: Path) -> None:
    """A recipe that validates every 4th epoch, cut to 1 epoch: its events hold no val/acc."""
    from torch.utils.tensorboard import SummaryWriter

    run = tmp_path / "run"
    with SummaryWriter(run) as writer:
        writer.add_scalar("epoch", 0, 10)
        writer.add_scalar("train/loss_epoch", 0.5, 10)
        writer.add_scalar("test/acc", 0.875, 11)
    found = runs_module.read_run(run, tmp_path)
    assert found.curve is None and found.row["val/acc"] is None
    assert found.row["test/acc"] == 0.875


def test_a_csv_logged_run_has_its_curve_row_and_closing_line(tiny_args, run_dir, capsys) -> None:
    """`runs` and `report` read a CSVLogger's metrics.csv as they read TensorBoard's events."""
    csv_logger = "--trainer.logger=lightning.pytorch.loggers.CSVLogger"
    cli = cli_main(["fit", config("mlp"), *tiny_args, csv_logger])
    run = Path(cli.trainer.log_dir)
    assert f"CSV logs: {run / 'metrics.csv'}" in capsys.readouterr().out
    curves = history.run_history(run)  # what report's curves.png draws
    assert list(curves["epoch"]) == [1, 2] and curves["val_acc"].notna().all()
    row = runs_module.read_run(run.resolve(), run_dir).row
    assert row["val/acc"] == pytest.approx(curves["val_acc"].max())
