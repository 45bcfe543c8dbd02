"""Checkpoints and configs written before the package was arranged by concept name the old
module paths (`fashion_lightning.module.ClassifierModule`); they still load, through every
command."""

import importlib

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import FittedRun, predictions_folder
from jsonargparse import ArgumentParser

from fashion_lightning.cli.main import cli_main
from fashion_lightning.data.datamodule import FashionMNISTDataModule
from fashion_lightning.deploy.runtimes import ModelFile
from fashion_lightning.moved import MOVED, current_class_path
from fashion_lightning.reference.__main__ import main as reference_main
from fashion_lightning.training.checkpoint import Checkpoint
from fashion_lightning.training.module import ClassifierModule

OLD_PATHS = {
    "fashion_lightning.module.ClassifierModule": ClassifierModule,
    "fashion_lightning.data.FashionMNISTDataModule": FashionMNISTDataModule,
}


@pytest.mark.parametrize("old", sorted(MOVED))
def test_every_old_module_path_imports_the_module_at_its_home(old: str) -> None:
    moved = importlib.import_module(f"fashion_lightning.{old}")
    assert moved is importlib.import_module(f"fashion_lightning.{MOVED[old]}")


@pytest.mark.parametrize("class_path", sorted(OLD_PATHS))
def test_old_class_paths_resolve_as_configs_name_them(class_path: str) -> None:
    """jsonargparse, which reads every config's `class_path`, finds the class itself."""
    parser = ArgumentParser()
    parser.add_argument("--cls", type=type)
    assert (
        parser.instantiate_classes(parser.parse_args([f"--cls={class_path}"])).cls
        is (OLD_PATHS[class_path])
    )
    assert current_class_path("fashion_lightning.module.ClassifierModule") == (
        "fashion_lightning.training.module.ClassifierModule"
    )


def test_a_checkpoint_recording_old_class_paths_works_in_every_command(
    mlp_run: FittedRun, fake_data_dir
) -> None:
    state = torch.load(mlp_run.best, weights_only=True)
    state["hyper_parameters"]["_class_path"] = "fashion_lightning.module.ClassifierModule"
    state["datamodule_hyper_parameters"]["_class_path"] = (
        "fashion_lightning.data.FashionMNISTDataModule"
    )
    old = mlp_run.best.with_name("old_paths.ckpt")
    torch.save(state, old)
    recorded = Checkpoint.read(old).state["hyper_parameters"]["_class_path"]
    assert recorded == "fashion_lightning.training.module.ClassifierModule"  # fresh processes too
    ckpt = f"--ckpt_path={old}"
    quiet = "--trainer.enable_progress_bar=false"
    tested = cli_main(["test", ckpt, quiet]).trainer.callback_metrics
    assert tested["test/acc"].item() == pytest.approx(mlp_run.metrics["test/acc"])
    assert "val/acc" in cli_main(["validate", ckpt, quiet]).trainer.callback_metrics
    predicted = cli_main(["predict", ckpt, quiet])
    assert len(pd.read_csv(predictions_folder(predicted) / "predictions.csv")) > 0
    report = cli_main(["report", ckpt, f"--out={mlp_run.run / 'old_report'}"])
    assert (report / "report.md").is_file()
    exported = cli_main(["export", ckpt, "--format=torchscript"])
    assert exported.is_file()
    served = ModelFile(str(old), "checkpoint").open("cpu", threads=torch.get_num_threads())
    assert served(np.zeros((2, 1, 28, 28), np.uint8))["probabilities"].shape == (2, 10)
    result = reference_main(["--evaluate-checkpoint", str(old), "--data-dir", str(fake_data_dir)])
    assert 0 <= result["test_acc"] <= 1
