"""Real-data end-to-end runs, minutes each: `make test-slow`."""

import json
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import COMMAND, config, scalars

from fashion_lightning.cli.main import cli_main
from fashion_lightning.data.datamodule import FashionMNISTDataModule
from fashion_lightning.evaluation.trust import TRUST_KEY, fit_trust
from fashion_lightning.reference.__main__ import main as reference_main
from fashion_lightning.training.checkpoint import load_model

pytestmark = pytest.mark.slow
# float32 on every CPU: the NumPy reference and one-process evaluations are compared to 1e-4.
QUIET = [
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.precision=32-true",
]


def test_mlp_reaches_its_floor_and_the_numpy_reference_agrees(real_data_dir, run_dir) -> None:
    cli = cli_main(["fit", config("mlp"), *QUIET])
    acc = cli.trainer.callback_metrics["test/acc"].item()
    assert acc >= 0.89
    numpy = reference_main(
        ["--evaluate-checkpoint", cli.trainer.checkpoint_callback.best_model_path]
    )
    assert numpy["test_acc"] == pytest.approx(
        acc, abs=1e-4
    )  # float64 vs float32: one image at most


def test_numpy_reference_trains_to_its_floor(real_data_dir: Path) -> None:
    result = reference_main(["--hidden", "256", "128", "--epochs", "10", "--seed", "0"])
    assert result["test_acc"] >= 0.885


def test_ddp_on_two_cpu_processes_matches_one_process(real_data_dir: Path, run_dir: Path) -> None:
    ddp = ["--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp"]
    cmd = [
        *COMMAND,
        "fit",
        config("mlp"),
        *ddp,
        *QUIET,
        "--trainer.max_epochs=2",
    ]
    subprocess.run(cmd, check=True, cwd=run_dir)
    (run,) = (run_dir / "lightning_logs").iterdir()  # rank 0 alone writes: one run folder
    logged = scalars(run)
    (best,) = (c for c in (run / "checkpoints").glob("*.ckpt") if c.name != "last.ckpt")
    assert (run / "checkpoints" / "last.ckpt").is_file()

    one = ["--ckpt_path", str(best), *QUIET]
    test = cli_main(["test", config("mlp"), *one]).trainer.callback_metrics
    val = cli_main(["validate", config("mlp"), *one]).trainer.callback_metrics
    assert test["test/acc"].item() == pytest.approx(logged["test/acc"][-1], abs=1e-6)
    assert val["val/acc"].item() == pytest.approx(max(logged["val/acc"]), abs=1e-6)
    assert test["test/acc"] > 0.8
    # The temperature and ood fit, from the two ranks' gathered outputs, equal one process's.
    written = torch.load(best, weights_only=True)[TRUST_KEY]
    datamodule = FashionMNISTDataModule.load_from_checkpoint(best)
    datamodule.load()
    one_process = L.Trainer(accelerator="cpu", devices=1, logger=False)
    alone = fit_trust(one_process, load_model(best), datamodule.splits)
    assert written["temperature"] == pytest.approx(alone["temperature"], rel=1e-4)
    for name in ("energy_threshold", "distance_threshold", "scale"):
        assert written["ood"][name].item() == pytest.approx(alone["ood"][name].item(), rel=1e-4)


def test_product_photos_keep_the_accuracy_of_the_stored_images(real_data_dir, run_dir) -> None:
    # The MLP: a CNN's translation invariance would make the photos' small shifts easier.
    fit = cli_main(["fit", config("mlp"), *QUIET, "--trainer.max_epochs=3"])
    script = Path(__file__).resolve().parents[1] / "scripts" / "photo_accuracy.py"
    ckpt = fit.trainer.checkpoint_callback.best_model_path
    result = subprocess.run(
        [sys.executable, str(script), "--ckpt_path", ckpt],
        capture_output=True,
        text=True,
        check=True,
    )
    measured = json.loads(result.stdout)
    assert measured["stored_acc"] > 0.85 and measured["ratio"] >= 0.85, measured
