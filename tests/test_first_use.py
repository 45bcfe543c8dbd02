"""What a new user hits in a first hour, each pinned by a test that failed before its fix."""

import os
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import COMMAND, FittedRun, config, flat, tiny_options
from PIL import Image
from test_cli import assert_user_error

from fashion_lightning.atomic import atomic_path, writable_problem
from fashion_lightning.cli.main import cli_main
from fashion_lightning.cli.recipes import recipe_names
from fashion_lightning.experiments.study import hide_password
from fashion_lightning.training import trainer as trainer_policy
from fashion_lightning.training.checkpoint import Checkpoint
from fashion_lightning.training.precision import resolve_precision


def weights(path: Path) -> dict[str, torch.Tensor]:
    return Checkpoint.read(path).state["state_dict"]


def fit(args: list[str]):
    return cli_main(["fit", config("mlp"), *args])


def test_resuming_with_more_epochs_continues_on_a_new_schedule(tiny_args, capsys) -> None:
    """A finished run (cosine decay to 0) resumed with more epochs: the schedule is rebuilt for
    the new total, the resumed steps train (lr > 0), and a line says so."""
    first = fit([*tiny_args, "--trainer.max_epochs=1"])
    last = Path(first.trainer.checkpoint_callback.last_model_path)
    before = weights(last)
    capsys.readouterr()
    resumed = fit([*tiny_args, "--trainer.max_epochs=2", "--ckpt_path=last"])
    out = flat(capsys.readouterr().out)
    assert "Resuming with a learning-rate schedule of 10 steps instead of 5" in out
    after = weights(Path(resumed.trainer.checkpoint_callback.last_model_path))
    assert resumed.trainer.global_step == 10
    assert any(not torch.equal(before[k], after[k]) for k in before)  # lr > 0: it trained


@pytest.mark.parametrize(
    "option", ["--model.optimizer.init_args.lr=-1", "--model.optimizer.init_args.weight_decay=-1"]
)
def test_a_setting_the_optimizer_refuses_is_one_paragraph(option, tiny_args, capsys, run_dir):
    assert_user_error(["fit", config("mlp"), *tiny_args, option], capsys, "--model.optimizer")
    assert not list((run_dir / "lightning_logs").glob("version_*"))


NO_GPU_HERE = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")


@pytest.mark.parametrize(
    "options, words",
    [
        pytest.param(
            ["--trainer.accelerator=gpu"], ["gpu", "--trainer.accelerator"], marks=NO_GPU_HERE
        ),
        (["--trainer.strategy=nonsense"], ["invalid strategy name", "--trainer option"]),
        (["--trainer.logger=lightning.pytorch.loggers.WandbLogger"], ["WandbLogger", "wandb"]),
    ],
    ids=["gpu without one", "unknown strategy", "logger package missing"],
)
def test_a_setting_the_trainer_refuses_is_one_paragraph(options, words, tiny_args, capsys, run_dir):
    for command in (["fit", config("mlp")], ["test", config("mlp")]):
        assert_user_error([*command, *tiny_args, *options], capsys, *words)


def test_a_config_of_only_some_options_says_how_to_stack_it(tiny_args, capsys, run_dir) -> None:
    Path("mine.yaml").write_text("trainer:\n  max_epochs: 1\n")
    words = ["replaces the default recipe", "--config cnn --config mine.yaml"]
    assert_user_error(["fit", "--config=mine.yaml", *tiny_args], capsys, *words)
    stacked = fit([*tiny_args, "--config=mine.yaml"])  # fit() names the MLP recipe first
    assert stacked.trainer.max_epochs == 1 and stacked.trainer.current_epoch == 1


def test_every_command_spells_the_data_folder_and_config_alike(
    mlp_run: FittedRun, fake_data_dir: Path, capsys, run_dir: Path
) -> None:
    """--data.data_dir as fit spells it (--data_dir still works), and --config: a file of the
    command's own options; a fit recipe there is told apart, by the name typed."""
    own = run_dir / "export.yaml"
    own.write_text(f"ckpt_path: {mlp_run.best}\nformat: torchscript\nout: {run_dir / 'm.pt'}\n")
    written = cli_main(["export", f"--config={own}", f"--data.data_dir={fake_data_dir}"])
    assert written == run_dir / "m.pt" and written.is_file()
    words = ["--config mlp is a fit recipe", "reads the network and the data settings"]
    assert_user_error(["report", "--config", "mlp", f"--ckpt_path={mlp_run.best}"], capsys, *words)


def test_outputs_get_the_mode_the_umask_gives(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "out.csv") as partial:
            partial.write_text("a\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out.csv").stat().st_mode) == 0o644


def test_a_shortened_recipe_says_that_validation_never_ran(tiny_args, capsys) -> None:
    fit([*tiny_args, "--trainer.max_epochs=1", "--trainer.check_val_every_n_epoch=2"])
    out = flat(capsys.readouterr().out)
    assert "Best checkpoint: none, since validation never ran" in out
    assert "check_val_every_n_epoch=2, 1 epoch(s) trained" in out


def test_lightnings_own_optimizer_options_are_gone(tiny_args, capsys) -> None:
    assert_user_error(["fit", *tiny_args, "--optimizer=Adam"], capsys, "--optimizer")
    with pytest.raises(SystemExit):
        cli_main(["fit", "--help"])
    help_text = capsys.readouterr().out
    assert "--optimizer " not in help_text and "--lr_scheduler" not in help_text
    assert "--model.optimizer" in help_text


@pytest.mark.parametrize("subcommand", ["validate", "test", "predict"])
def test_evaluation_without_a_checkpoint_says_what_it_needs(subcommand, tiny_args, capsys):
    assert_user_error([subcommand, *tiny_args], capsys, "needs a checkpoint file", "--ckpt_path")


def test_an_unwritable_log_folder_is_refused_up_front_even_for_root(tiny_args, capsys, run_dir):
    assert writable_problem(Path("/proc/fashion")) is not None  # os.access says yes to root here
    option = "--trainer.logger.init_args.save_dir"
    assert_user_error(["fit", config("mlp"), *tiny_args, f"{option}=/proc/fashion"], capsys, option)


def test_evaluation_writes_into_the_checkpoints_run_and_no_tensorboard_run(tiny_args, capsys):
    run = Path(fit(tiny_args).trainer.log_dir)
    last = run / "checkpoints" / "last.ckpt"
    hparams = (run / "hparams.yaml").read_text()
    assert "class_path: fashion_lightning.models.MLP" in hparams and "_instantiator" not in hparams
    for subcommand in ("validate", "test", "predict"):
        cli_main([subcommand, f"--ckpt_path={last}", *tiny_args])
    assert sorted(p.name for p in run.parent.iterdir()) == [run.name]  # no version_1
    assert len(pd.read_csv(run / "predictions.csv")) == 40
    elsewhere = Path("elsewhere.ckpt")
    elsewhere.write_bytes(last.read_bytes())
    capsys.readouterr()
    cli_main(["predict", f"--ckpt_path={elsewhere}", *tiny_args])
    assert "writing this command's files to lightning_logs/eval/" in flat(capsys.readouterr().out)
    assert (Path("lightning_logs") / "eval" / "predictions.csv").is_file()


def test_version_recipes_by_name_and_help(tiny_args, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["--version"])
    assert exit_info.value.code == 0 and "0." in capsys.readouterr().out
    cli = cli_main(["fit", "--config=cnn_fast", *tiny_args, "--trainer.fast_dev_run=true"])
    assert cli.config.fit.model.net.init_args.channels == [24, 48, 96]
    with pytest.raises(SystemExit):
        cli_main(["fit", "--help"])
    fit_help = flat(capsys.readouterr().out)
    assert all(name in fit_help for name in recipe_names())
    with pytest.raises(SystemExit):
        cli_main(["--help"])
    top = flat(capsys.readouterr().out)
    assert "Lightning Trainer command line tool" not in top
    assert "Evaluate a checkpoint (--ckpt_path FILE) on the official test set." in top
    err = assert_user_error(["fit", "--config=no_such_recipe"], capsys, "no_such_recipe")
    assert "cnn_fast" in err
    err = assert_user_error(["fit", "--trainer.max_epochs=x"], capsys, "fit --help")
    assert "SUBCOMMAND" not in err and "[options]" not in err


def test_without_a_terminal_the_progress_is_a_plain_line_per_epoch(tiny_args, capsys) -> None:
    """A piped log (`fit ... > fit.log`) gets lines, not redrawn bars and escape codes."""
    fit([*tiny_args, "--trainer.enable_progress_bar=true"])
    out, err = capsys.readouterr()
    assert not {"\r", "\x1b"} & set(out + err)  # the bars draw on stderr
    epochs = [line for line in out.splitlines() if line.startswith("Epoch ")]
    assert [line.split(":")[0] for line in epochs] == ["Epoch 1/2", "Epoch 2/2"]
    assert all("val/acc" in line and "train/loss" in line for line in epochs)


def test_val_size_0_trains_on_every_image_and_says_what_it_skips(tiny_args, capsys, caplog) -> None:
    cli = fit([*tiny_args, "--data.val_size=0"])
    assert "no validation; the best checkpoint is the last epoch's" in capsys.readouterr().out
    assert "No validation in this fit: the model stays uncalibrated" in caplog.text
    assert len(cli.datamodule.splits["train"][0]) == 96  # every training image
    best = Path(cli.trainer.checkpoint_callback.best_model_path)
    assert best.name == "epoch=1.ckpt" and "test/acc" in cli.trainer.callback_metrics
    assert cli.model.temperature == 1.0


@pytest.mark.slow  # real processes, as a user runs them: Python's default warning filters
def test_ordinary_commands_print_no_warnings(fake_data_dir: Path, tmp_path: Path) -> None:
    """A bf16 fit with its model summary, then each evaluation from another folder (where the
    checkpoint's dirpath differs): not one warning on stderr."""
    tiny = [a for a in tiny_options(fake_data_dir) if "precision" not in a and "summary" not in a]
    fit_dir, elsewhere = tmp_path / "fit", tmp_path / "elsewhere"
    for folder in (fit_dir, elsewhere):
        folder.mkdir()
    commands = [(fit_dir, ["fit", config("mlp"), *tiny, "--trainer.precision=bf16-mixed"])]
    ckpt = fit_dir / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    for command in ("validate", "test", "predict"):
        commands.append(
            (elsewhere, [command, f"--ckpt_path={ckpt}", f"--data.data_dir={fake_data_dir}"])
        )
    for cwd, args in commands:
        run = subprocess.run([*COMMAND, *args], cwd=cwd, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        warned = [line for line in run.stderr.splitlines() if "Warning" in line or ".py:" in line]
        assert not warned, f"{args[0]}: {warned}"


PROBE = """import sys
from fashion_lightning.cli.main import cli_main
try:
    cli_main([sys.argv[1]])
except SystemExit:
    pass
print("imported:", sorted({"torch", "lightning"} & set(sys.modules)))"""


def test_help_and_version_answer_at_once_naming_the_program() -> None:
    """Neither imports torch or Lightning (seconds on 2 cores); --version names the program as
    it was invoked."""
    for flag in ("--help", "--version"):
        run = subprocess.run([sys.executable, "-c", PROBE, flag], capture_output=True, text=True)
        assert run.stdout.strip().endswith("imported: []"), run.stdout + run.stderr
    script = Path(sys.executable).parent / "fashion-lightning"  # the console script
    run = subprocess.run([script, "--version"], capture_output=True, text=True, check=True)
    assert run.stdout.startswith("fashion-lightning 0.")


def test_a_whole_number_limit_is_a_number_of_batches(tiny_args) -> None:
    cli = fit([*tiny_args, "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1"])
    assert cli.trainer.global_step == 2  # one batch per epoch, not 100%
    assert cli.trainer.limit_val_batches == 1 and isinstance(cli.trainer.limit_val_batches, int)


def test_predict_counts_only_the_photos_it_could_use(tiny_args, capsys, tmp_path) -> None:
    last = Path(fit(tiny_args).trainer.checkpoint_callback.last_model_path)
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        image = Image.new("L", (40, 50), color=240)
        image.paste(20 * i, (10, 10, 30, 40))  # a dark garment on a light background
        image.save(photos / f"ok{i}.png")
    (photos / "broken.png").write_bytes(b"not a png")
    capsys.readouterr()
    cli_main(["predict", f"--ckpt_path={last}", f"--data.predict_path={photos}", *tiny_args])
    assert "Predictions for 3 of 4 photos written" in flat(capsys.readouterr().out)


def test_a_database_password_is_never_echoed() -> None:
    text = "could not connect to postgresql://bob:s3cret@db.example/x"
    assert "s3cret" not in hide_password(text) and "bob" in hide_password(text)


def test_fits_final_test_is_float32_like_test(tiny_args, capsys, monkeypatch) -> None:
    """With the precision chosen by the hardware (bf16 here, forced), fit's printed test
    accuracy and loss are exactly what `test --ckpt_path` gives for the same checkpoint."""
    monkeypatch.setattr(trainer_policy.Capabilities, "detect", classmethod(bf16_machine))
    chosen = []
    monkeypatch.setattr(trainer_policy, "resolve_precision", spy(resolve_precision, chosen))
    args = [a for a in tiny_args if not a.startswith("--trainer.precision")]
    cli = fit([*args, "--trainer.check_val_every_n_epoch=1"])
    assert chosen[0][0] == "bf16-mixed"  # trained in bf16; tested in float32
    fitted = {k: v.item() for k, v in cli.trainer.callback_metrics.items() if k.startswith("test/")}
    best = cli.trainer.checkpoint_callback.best_model_path
    tested = cli_main(["test", f"--ckpt_path={best}", *tiny_args]).trainer.callback_metrics
    assert fitted == {k: tested[k].item() for k in fitted}


def spy(function, calls: list):
    def wrapper(*args):
        calls.append(function(*args))
        return calls[-1]

    return wrapper


def bf16_machine(cls):
    return cls(False, False, "", cpu_avx512_bf16=True, cpu_amx=False, cpu_capability="AVX512")


@pytest.mark.slow  # a fresh interpreter importing torch and Lightning: 6 s on 2 cores
def test_the_console_command_shows_no_adverts_or_library_warnings(run_dir, fake_data_dir) -> None:
    result = subprocess.run(
        [
            *COMMAND,
            "fit",
            "--config=mlp",
            "--trainer.fast_dev_run=1",
            f"--data.data_dir={fake_data_dir}",
            "--data.val_size=16",
            "--trainer.precision=32-true",
        ],
        capture_output=True,
        text=True,
        cwd=run_dir,
        check=True,
    )
    output = result.stdout + result.stderr
    assert "Tip:" not in output and "LeafSpec" not in output and "args parameter" not in output
