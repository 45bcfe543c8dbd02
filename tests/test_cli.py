"""The CLI end to end on tiny synthetic data: fit/validate/test/predict, checkpoints, logs, errors."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import lightning as L
import pandas as pd
import pytest
import torch
import yaml
from conftest import (
    COMMAND,
    CONFIGS,
    SHARED_FIT_OPTIONS,
    FittedRun,
    assert_user_error,
    config,
    flat,
    predictions_file,
    predictions_folder,
    scalars,
    synthetic_split,
)
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fashion_lightning import __main__
from fashion_lightning.cli.commands import COMMANDS
from fashion_lightning.cli.lightning import make_cli
from fashion_lightning.cli.main import cli_main
from fashion_lightning.cli.recipes import DEFAULT_RECIPE
from fashion_lightning.data.datamodule import FashionMNISTDataModule
from fashion_lightning.models import CNN, MLP, ResNet
from fashion_lightning.training.module import ClassifierModule


@pytest.mark.parametrize("shared_fit", ["mlp_fit", "cnn_fit"])
def test_fit_writes_events_checkpoints_config_and_tests(shared_fit: str, request) -> None:
    fitted: FittedRun = request.getfixturevalue(shared_fit)
    log_dir = fitted.run
    assert log_dir.parent == fitted.cwd / "lightning_logs"  # where the command ran
    assert (log_dir / "checkpoints" / "last.ckpt").is_file()
    assert fitted.best.name.startswith("epoch=") and fitted.best.parent == log_dir / "checkpoints"
    assert (log_dir / "config.yaml").is_file()
    logged = scalars(log_dir)
    for tag in ("train/loss", "train/acc", "val/loss", "val/acc", "test/loss", "test/acc"):
        assert tag in logged, tag
    assert len(logged["val/acc"]) == 2
    assert logged["test/acc"] == [pytest.approx(fitted.metrics["test/acc"])]  # once, as printed
    assert any(tag.startswith("lr-") for tag in logged)


def test_fit_draws_its_pictures_into_tensorboard(cnn_fit: FittedRun, mlp_fit: FittedRun) -> None:
    """The samples, a confusion matrix per validation (none for the sanity check) and the
    mistakes, with the HParams; `--figures.draw false` (the MLP's) keeps only the HParams."""
    images = EventAccumulator(str(cnn_fit.run), size_guidance={"images": 0})
    images.Reload()
    expected = {"fit/samples", "val/confusion_matrix"}
    if scalars(cnn_fit.run)["val/acc"][-1] < 1.0:  # a grid of mistakes needs mistakes
        expected.add("val/misclassified")
    assert set(images.Tags()["images"]) == expected
    assert len(images.Images("val/confusion_matrix")) == 2
    assert "_hparams_/session_start_info" in images.PluginTagToContent("hparams")
    plain = EventAccumulator(str(mlp_fit.run), size_guidance={"images": 0})
    plain.Reload()
    assert plain.Tags()["images"] == []
    assert "_hparams_/session_start_info" in plain.PluginTagToContent("hparams")


@pytest.mark.parametrize("name", ["cnn", "resnet"])
def test_the_bigger_recipes_build_and_take_a_training_step(name: str, tiny_args) -> None:
    """The default CNN and the ResNet as their configs build them: one step lowers nothing
    unexpected, and the output is (B, 10) logits with gradients everywhere."""
    model = make_cli([config(name), *tiny_args], run=False).model
    images, labels = torch.randn(4, 1, 28, 28), torch.arange(4)
    model.net.train()
    loss = torch.nn.functional.cross_entropy(model.net(images), labels)
    loss.backward()
    assert all(p.grad is not None for p in model.net.parameters() if p.requires_grad)
    assert model.net.eval()(images).shape == (4, 10)


def test_gpu_recipe_builds_a_wide_resnet(tiny_args: list[str]) -> None:
    """configs/wrn.yaml is meant for a GPU; on CPU, prove the CLI builds its network."""
    net = make_cli([config("wrn"), *tiny_args], run=False).model.net
    assert isinstance(net, ResNet) and len(net.stages) == 3 * 2  # WRN-16: 2 blocks a stage
    assert round(sum(p.numel() for p in net.parameters()) / 1e6, 1) == 11.0  # WRN-16-8
    assert net.eval()(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.slow  # 11M parameters: seconds a step on 2 cores
def test_gpu_recipe_takes_steps_and_tests(tiny_args: list[str]) -> None:
    """configs/wrn.yaml on CPU: it trains and tests."""
    limits = ["--trainer.limit_val_batches=1", "--trainer.limit_test_batches=1"]
    cli = cli_main(["fit", config("wrn"), *tiny_args, "--trainer.max_steps=2", *limits])
    assert cli.trainer.global_step == 2
    assert "test/acc" in cli.trainer.callback_metrics


def test_a_runs_config_reruns_the_same_run(tiny_args, run_dir: Path, capsys) -> None:
    """Whole numbers of batches stay whole in config.yaml and --print_config, so a rerun of the
    saved config takes the same batches (1.0 would mean all of them)."""
    limits = ["--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "1"]
    first = cli_main(["fit", config("mlp"), *tiny_args, *limits, "--trainer.limit_test_batches=1"])
    saved = yaml.safe_load((Path(first.trainer.log_dir) / "config.yaml").read_text())["trainer"]
    assert (saved["limit_train_batches"], saved["limit_val_batches"]) == (3, 1)
    again = cli_main(["fit", f"--config={Path(first.trainer.log_dir) / 'config.yaml'}"])
    assert again.trainer.num_training_batches == first.trainer.num_training_batches == 3
    assert again.trainer.num_val_batches == first.trainer.num_val_batches == [1]
    assert again.trainer.num_test_batches == [1]
    capsys.readouterr()
    with pytest.raises(SystemExit):
        cli_main(["fit", config("mlp"), *limits, "--print_config"])
    assert "limit_train_batches: 3\n" in capsys.readouterr().out


def test_fit_without_a_logger_still_checkpoints_and_tests(tiny_args, capsys, run_dir) -> None:
    """Each run without a logger gets its own folder: the next never overwrites its files."""
    for version in (0, 1):
        cli = cli_main(["fit", config("mlp"), *tiny_args, "--trainer.logger=false"])
        best = Path(cli.trainer.checkpoint_callback.best_model_path).resolve()
        run = run_dir / "lightning_logs" / f"version_{version}"
        assert best.is_file() and best.parent.parent == run
        assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
        out = capsys.readouterr().out
        assert "Test accuracy:" in out and "TensorBoard" not in out
    assert not list(run.glob("events.out.tfevents*"))
    resumed = ["--trainer.logger=false", "--trainer.max_epochs=3", "--ckpt_path=last"]
    cli = cli_main(["fit", config("mlp"), *tiny_args, *resumed])
    assert Path(cli.trainer.default_root_dir) == Path("lightning_logs") / "version_1"  # its own
    assert not (run_dir / "lightning_logs" / "version_2").exists()


def test_fast_config_validates_only_at_the_end(tiny_args: list[str]) -> None:
    cli = cli_main(["fit", config("cnn_fast"), *tiny_args])  # 2 epochs, validation every 8
    assert "test/acc" in cli.trainer.callback_metrics
    assert Path(cli.trainer.checkpoint_callback.last_model_path).is_file()


def test_flip_tta_averages_an_image_and_its_mirror() -> None:
    model = ClassifierModule(CNN(channels=[4], dropout=0.0), tta_flip=True).eval()
    x = torch.randn(3, 1, 28, 28)
    expected = (model.net(x) + model.net(x.flip(-1))) / 2
    assert torch.allclose(model(x), expected)
    assert torch.allclose(model(x.flip(-1)), model(x), atol=1e-6)  # mirror-invariant
    model.train()
    with torch.no_grad():
        assert torch.equal(model(x), model.net(x))  # training sees the image as it is


@pytest.mark.parametrize("net", [MLP(), CNN(channels=[4, 8])], ids=["mlp", "cnn"])
def test_module_runs_a_fast_dev_run(net: torch.nn.Module, fake_data_dir: Path, run_dir) -> None:
    model = ClassifierModule(net, lr_decay="cosine", warmup_fraction=0.5)
    data = FashionMNISTDataModule(data_dir=str(fake_data_dir), val_size=16, batch_size=8)
    trainer = L.Trainer(fast_dev_run=2, enable_progress_bar=False, enable_model_summary=False)
    before = [p.detach().clone() for p in net.parameters()]
    trainer.fit(model, data)
    assert trainer.global_step == 2 and trainer.callback_metrics["train/loss"].isfinite()
    assert not all(torch.equal(a, b) for a, b in zip(before, net.parameters()))  # it learned
    sixteenths = trainer.callback_metrics["val/acc"].item() * 16  # over the 16 images validated
    assert sixteenths == pytest.approx(round(sixteenths), abs=1e-4)


@pytest.mark.parametrize("fitted", ["mlp_fit", "cnn_fit"])
def test_the_tiny_problem_is_learned(fitted: str, request: pytest.FixtureRequest) -> None:
    metrics = request.getfixturevalue(fitted).metrics
    assert metrics["test/acc"] > 0.5, metrics  # chance is 0.1


def test_same_seed_gives_identical_metrics(cnn_fit: FittedRun, tiny_args: list[str]) -> None:
    """A second fit of the shared CNN's command, later in the session, gives the same numbers."""
    again = cli_main(["fit", config("cnn_fast"), *tiny_args, *SHARED_FIT_OPTIONS])
    metrics = {k: v.item() for k, v in again.trainer.callback_metrics.items()}
    assert "test/acc" in metrics and metrics == cnn_fit.metrics


def test_checkpoint_reloads_to_identical_predictions(mlp_fit: FittedRun) -> None:
    reloaded = ClassifierModule.load_from_checkpoint(mlp_fit.best)  # the net comes from hparams
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(reloaded.eval()(x), mlp_fit.model.eval()(x))


def test_test_subcommand_reproduces_the_fit_score(mlp_run: FittedRun, tiny_args) -> None:
    cli = cli_main(["test", config("mlp"), *tiny_args, f"--ckpt_path={mlp_run.best}"])
    assert cli.trainer.callback_metrics["test/acc"].item() == mlp_run.metrics["test/acc"]


def test_predict_writes_one_row_per_test_image(mlp_run: FittedRun, tiny_args) -> None:
    best = mlp_run.best
    cli = cli_main(["predict", config("mlp"), *tiny_args, f"--ckpt_path={best}"])
    table = pd.read_csv(predictions_folder(cli) / "predictions.csv")
    assert len(table) == 40 and list(table["index"]) == list(range(40))
    probs = table[list(FashionMNISTDataModule.class_names)].to_numpy()
    assert abs(probs.sum(axis=1) - 1).max() < 1e-4
    assert (probs.argmax(axis=1) == table["pred"]).all()


def test_missing_data_folder_is_one_clear_error(tiny_args, capsys, run_dir: Path) -> None:
    assert_user_error(
        ["fit", config("mlp"), *tiny_args, "--data.data_dir=/no/such/dir"],
        capsys,
        "error:",
        "/no/such/dir",
        "apt-get install dataset-fashion-mnist",
    )
    assert not (run_dir / "lightning_logs").exists()


def test_corrupt_data_file_leaves_no_run_folder(
    tiny_args, capsys, tmp_path: Path, fake_data_dir: Path, run_dir: Path
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in fake_data_dir.iterdir():
        broken.joinpath(f.name).write_bytes(
            f.read_bytes()[: -50 if "t10k-images" in f.name else None]
        )
    assert_user_error(
        ["test", config("mlp"), *tiny_args, f"--data.data_dir={broken}"],
        capsys,
        "t10k-images-idx3-ubyte.gz",
        "truncated",
    )
    assert not (run_dir / "lightning_logs").exists()


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--model.no_such_option=1"], ["no_such_option"]),
        (["--model.lr=0.1"], ["unrecognized", "--model.lr"]),  # no prefix match to lr_decay
        (["--data.batch_size=many"], ["batch_size", "many"]),
        (["--trainer.max_epochs=1.5"], ["max_epochs"]),
        (["--trainer.max_epoch", "3"], ["Did you mean --trainer.max_epochs?"]),
        (["--model.muon_lr=abc"], ["--model.muon_lr abc: expected float or null"]),
    ],
)
def test_bad_options_are_named(tiny_args, capsys, extra, words) -> None:
    err = assert_user_error(["fit", config("mlp"), *tiny_args, *extra], capsys, *words)
    assert "<class" not in err and "Union subtypes" not in err


def test_a_misspelled_option_of_a_project_command_gets_a_suggestion(capsys) -> None:
    assert_user_error(["report", "--ckpt_pth", "x.ckpt"], capsys, "Did you mean --ckpt_path?")


def test_unknown_key_in_a_config_file_is_named(tiny_args, capsys, run_dir: Path) -> None:
    bad = run_dir / "bad.yaml"
    bad.write_text((CONFIGS / "mlp.yaml").read_text() + "  learning_rate: 0.1\n")
    assert_user_error(["fit", f"--config={bad}", *tiny_args], capsys, "learning_rate")


def test_missing_checkpoint_is_one_clear_error(tiny_args, capsys, run_dir: Path) -> None:
    assert_user_error(
        ["test", config("mlp"), *tiny_args, "--ckpt_path=gone.ckpt"],
        capsys,
        "gone.ckpt",
        "does not exist",
    )
    assert not (run_dir / "lightning_logs").exists()


def test_checkpoint_of_the_other_network_is_refused(mlp_run: FittedRun, tiny_args, capsys) -> None:
    best = str(mlp_run.best)
    args = ["test", config("cnn"), *tiny_args, f"--ckpt_path={best}"]
    assert_user_error(args, capsys, best, "MLP", "CNN", "config.yaml")


def test_checkpoint_without_hparams_is_checked_by_its_weights(
    tiny_args, capsys, fake_data_dir, run_dir: Path
) -> None:
    model = ClassifierModule(MLP())  # built in Python: no network config in the checkpoint
    trainer = L.Trainer(max_steps=1, logger=False, enable_progress_bar=False, limit_val_batches=0)
    trainer.fit(model, FashionMNISTDataModule(data_dir=str(fake_data_dir), val_size=16))
    trainer.save_checkpoint(run_dir / "plain.ckpt")
    assert_user_error(
        ["test", config("cnn"), *tiny_args, "--ckpt_path=plain.ckpt"],
        capsys,
        "plain.ckpt",
        "different network",
    )


def test_not_a_checkpoint_is_one_clear_error(tiny_args, capsys, run_dir: Path) -> None:
    (run_dir / "notes.ckpt").write_text("not a checkpoint")
    assert_user_error(
        ["test", config("mlp"), *tiny_args, "--ckpt_path=notes.ckpt"],
        capsys,
        "notes.ckpt",
        "not a readable Lightning checkpoint",
    )


def test_the_command_line_prints_one_paragraph_not_a_traceback(run_dir, monkeypatch, capsys):
    """`main`, as the console script calls it, on options read from sys.argv."""
    argv = ["fashion_lightning", "fit", config("mlp"), "--data.data_dir=/no/dir"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        __main__.main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert "error: The data folder /no/dir, named by the data_dir option" in flat(err)
    assert not (run_dir / "lightning_logs").exists()


@pytest.mark.slow  # a fresh interpreter importing torch and Lightning: 6 s on 2 cores
def test_the_installed_command_prints_one_paragraph_not_a_traceback(run_dir: Path) -> None:
    result = subprocess.run(
        [
            *COMMAND,
            "fit",
            config("mlp"),
            "--data.data_dir=/no/dir",
        ],
        capture_output=True,
        text=True,
        cwd=run_dir,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "error: The data folder /no/dir, named by the data_dir option" in flat(result.stderr)
    assert not (run_dir / "lightning_logs").exists()


@pytest.mark.parametrize("subcommand", ["test", "validate", "predict"])
def test_best_and_last_need_a_fit(subcommand: str, tiny_args, capsys) -> None:
    assert_user_error(
        [subcommand, config("mlp"), *tiny_args, "--ckpt_path=best"],
        capsys,
        "only means something inside a `fit` run",
    )


def test_fit_without_checkpointing(tiny_args: list[str]) -> None:
    cli = cli_main(["fit", config("mlp"), *tiny_args, "--trainer.enable_checkpointing=false"])
    assert cli.trainer.checkpoint_callback is None and "test/acc" in cli.trainer.callback_metrics


def test_predict_respects_batch_limits(mlp_run: FittedRun, tiny_args: list[str]) -> None:
    best = mlp_run.best
    cli = cli_main(
        [
            "predict",
            config("mlp"),
            *tiny_args,
            f"--ckpt_path={best}",
            "--trainer.limit_predict_batches=2",
        ]
    )
    assert len(pd.read_csv(predictions_folder(cli) / "predictions.csv")) == 32


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--model.net.init_args.channels=[]"], "1 to 4 blocks"),
        (["--model.label_smoothing=2"], "--model.label_smoothing"),
        (["--trainer.max_epochs=-1"], "--trainer.max_epochs"),
    ],
)
def test_bad_model_settings_are_explained(extra, words, tiny_args, capsys, run_dir) -> None:
    assert_user_error(["fit", config("cnn"), *tiny_args, *extra], capsys, words)
    assert not (run_dir / "lightning_logs").exists()


def test_fit_with_no_arguments_trains_the_shipped_recipe(tiny_args, run_dir: Path) -> None:
    cli = cli_main(["fit", *tiny_args, "--trainer.fast_dev_run=true"])  # no --config
    recipe = yaml.safe_load(DEFAULT_RECIPE.read_text())
    assert isinstance(cli.model.net, CNN) and Path.cwd() == run_dir  # outside the repo
    assert cli.model.lr_decay == recipe["model"]["lr_decay"]
    assert cli.datamodule.random_crop == recipe["data"]["random_crop"]


@pytest.mark.parametrize(
    ("args", "recipe"),
    [([], "cnn"), ([config("mlp")], "mlp")],  # the default recipe never leaks under a --config
)
def test_print_config_shows_the_recipe_in_use(args, recipe: str, run_dir: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", *args, "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    expected = yaml.safe_load((CONFIGS / f"{recipe}.yaml").read_text())
    assert printed["model"]["net"] == expected["model"]["net"] | {
        "init_args": printed["model"]["net"]["init_args"] | expected["model"]["net"]["init_args"]
    }
    assert printed["trainer"]["max_epochs"] == expected["trainer"]["max_epochs"]
    assert printed["data"]["random_crop"] == expected.get("data", {}).get("random_crop", 0)


def test_help_lists_every_command(capsys, run_dir: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("fit", "validate", "test", "predict", *COMMANDS):
        assert f"    {command} " in out, command


def outputs(cli) -> dict:
    """What a validate/test/predict run produced: its metrics, or its predictions table."""
    if cli.subcommand == "predict":
        return pd.read_csv(predictions_folder(cli) / "predictions.csv").to_dict("list")
    return {k: v.item() for k, v in cli.trainer.callback_metrics.items()}


@pytest.mark.parametrize("subcommand", ["validate", "test", "predict"])
def test_a_checkpoint_alone_equals_its_config(
    subcommand, mlp_run: FittedRun, tiny_args, fake_data_dir: Path
) -> None:
    best = mlp_run.best
    # Read each run's outputs as it ends: both predict runs write the checkpoint's predictions.csv.
    with_config = outputs(cli_main([subcommand, config("mlp"), *tiny_args, f"--ckpt_path={best}"]))
    quiet = ["--trainer.enable_progress_bar=false", "--trainer.precision=32-true"]
    alone = cli_main([subcommand, f"--ckpt_path={best}", *quiet])
    assert isinstance(alone.model.net, MLP)
    assert alone.datamodule.data_dir == str(fake_data_dir)  # recorded by the fit, as val_size
    assert with_config and outputs(alone) == with_config


def test_options_override_the_checkpoint_config(mlp_run: FittedRun) -> None:
    best = mlp_run.best
    cli = cli_main(
        [
            "test",
            f"--ckpt_path={best}",
            "--data.eval_batch_size=7",
            "--model.tta_flip=true",
            "--trainer.enable_progress_bar=false",
        ]
    )
    assert cli.datamodule.eval_batch_size == 7 and cli.model.tta_flip
    assert cli.datamodule.val_size == 16  # recorded by the fit


def test_checkpoint_without_config_asks_for_one(tiny_args, capsys, fake_data_dir, run_dir) -> None:
    model = ClassifierModule(MLP())  # built in Python: no network config in the checkpoint
    trainer = L.Trainer(max_steps=1, logger=False, enable_progress_bar=False, limit_val_batches=0)
    trainer.fit(model, FashionMNISTDataModule(data_dir=str(fake_data_dir), val_size=16))
    trainer.save_checkpoint(run_dir / "plain.ckpt")
    assert_user_error(
        ["test", "--ckpt_path=plain.ckpt"], capsys, "plain.ckpt", "records no config", "--config"
    )


def test_predict_on_photos_writes_a_row_per_file_and_a_grid(
    mlp_run: FittedRun, run_dir: Path
) -> None:
    """Each prediction set has its own file: the test set's predictions.csv, then one named
    after each photos folder, never replacing another folder's of the same name."""
    best = mlp_run.best

    def predict(*options: str) -> Path:
        args = [f"--ckpt_path={best}", *options, "--trainer.enable_progress_bar=false"]
        return predictions_file(cli_main(["predict", *args]))

    test_set = predict("--trainer.limit_predict_batches=1")
    photos_dir = Path("photos")  # relative, as typed
    photos_dir.mkdir()
    images, _ = synthetic_split(3, seed=5)
    for i, image in enumerate(images):
        Image.fromarray(255 - image).save(photos_dir / f"{i}.{['png', 'jpg', 'webp'][i]}")
    (photos_dir / "3.png").write_text("not an image")
    written = predict(f"--data.predict_path={photos_dir}", "--data.data_dir=/no/such/dir")
    assert (test_set.name, written.name) == ("predictions.csv", "predictions_photos.csv")
    assert len(pd.read_csv(test_set)) == 16  # the test set's file is untouched
    table = pd.read_csv(written, keep_default_na=False)
    names = list(FashionMNISTDataModule.class_names)
    assert list(table.columns) == [
        "file",
        "class",
        "confidence",
        *names,
        "ood_score",
        "verdict",
        "error",
    ]
    assert list(table["file"]) == [
        str(run_dir / "photos" / name) for name in ("0.png", "1.jpg", "2.webp", "3.png")
    ]
    assert list(table["error"] != "") == [False, False, False, True]
    good = table[table["error"] == ""]
    probs = good[names].astype(float).to_numpy()
    assert abs(probs.sum(axis=1) - 1).max() < 1e-4
    assert list(good["class"]) == [names[i] for i in probs.argmax(axis=1)]
    assert written.with_suffix(".png").stat().st_size > 0
    assert predict(f"--data.predict_path={photos_dir}") == written  # its own file again
    other = run_dir / "elsewhere" / "photos"
    other.mkdir(parents=True)
    shutil.copy(photos_dir / "0.png", other)
    assert predict(f"--data.predict_path={other}").name == "predictions_photos_2.csv"
    assert len(pd.read_csv(written)) == 4


@pytest.mark.slow  # builds and installs a wheel: half a minute
def test_a_wheel_install_trains_the_shipped_recipe(tiny_args, tmp_path_factory) -> None:
    root, work = Path(__file__).resolve().parents[1], tmp_path_factory.mktemp("wheel")
    shutil.copytree(root / "fashion_lightning", work / "src" / "fashion_lightning")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, work / "src" / name)
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", work / "dist", work / "src"],
        check=True,
    )
    (wheel,) = (work / "dist").glob("*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", work / "site", wheel], check=True)
    assert (work / "site" / "fashion_lightning" / "deploy" / "serve_page.html").is_file()  # data
    env = {**os.environ, "PYTHONPATH": str(work / "site")}  # the installed copy, not the repo's
    code = (
        "import fashion_lightning.__main__ as m, fashion_lightning.cli.recipes as c; "
        "print(c.DEFAULT_RECIPE); m.main()"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "fit", *tiny_args, "--trainer.fast_dev_run=true"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.startswith(str(work / "site" / "fashion_lightning" / "configs"))
