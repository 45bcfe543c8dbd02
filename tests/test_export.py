"""Exported models (ONNX, TorchScript) give the checkpoint's calibrated probabilities and ood
scores on real test images."""

import warnings
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from conftest import FittedRun

from fashion_lightning import idx
from fashion_lightning.checkpoint import load_model
from fashion_lightning.cli import cli_main
from fashion_lightning.data import normalize
from fashion_lightning.export import SUFFIXES
from fashion_lightning.inference import ProbabilityModel

BATCH_SIZES = (1, 100)


@pytest.fixture(params=["mlp_fit", "cnn_fit"])  # cnn_fit: a CNN with flip TTA
def checkpoint(request, run_dir: Path) -> str:
    """The best checkpoint of a shared tiny fit, copied here: the export is written beside it."""
    fitted: FittedRun = request.getfixturevalue(request.param)
    return str(fitted.moved_to(run_dir).best)


@pytest.fixture(scope="module")
def test_images(real_data_dir: Path) -> np.ndarray:
    """The first real test images, uint8 (N, 1, 28, 28) as the data set stores them."""
    return idx.load_split(real_data_dir, "test")[0][: max(BATCH_SIZES), None]


@torch.no_grad()
def expected_probs(ckpt_path: str, images: np.ndarray) -> np.ndarray:
    """The checkpoint's probabilities computed from its LightningModule: logits / T, softmax."""
    model = load_model(ckpt_path)
    return (model(normalize(torch.from_numpy(images))) / model.temperature).softmax(-1).numpy()


@torch.no_grad()
def expected_ood(ckpt_path: str, images: np.ndarray) -> np.ndarray:
    return ProbabilityModel(load_model(ckpt_path))(torch.from_numpy(images))[1].numpy()


def run_onnx(path: Path, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["probabilities", "ood_score"]
    return tuple(session.run(None, {session.get_inputs()[0].name: images}))


def run_torchscript(path: Path, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with warnings.catch_warnings():  # torch 2.14 deprecates TorchScript; it is still how it loads
        warnings.filterwarnings("ignore", message=".*torch.jit.load.* is deprecated")
        return tuple(t.numpy() for t in torch.jit.load(str(path))(torch.from_numpy(images)))


@pytest.mark.parametrize(("fmt", "run"), [("onnx", run_onnx), ("torchscript", run_torchscript)])
def test_export_matches_the_checkpoint(fmt, run, checkpoint: str, test_images) -> None:
    out = cli_main(["export", f"--ckpt_path={checkpoint}", f"--format={fmt}"])
    assert out == Path(checkpoint).with_suffix(SUFFIXES[fmt])  # beside the checkpoint
    assert not list(out.parent.glob(".*partial"))
    for n in BATCH_SIZES:
        images = test_images[:n]
        (got, ood), want = run(out, images), expected_probs(checkpoint, images)
        assert got.shape == (n, 10) and got.dtype == np.float32
        assert np.abs(got - want).max() <= 1e-5
        assert (got.argmax(axis=1) == want.argmax(axis=1)).all()
        assert ood.shape == (n,) and np.isfinite(ood).all()  # the fit wrote an ood fit
        assert np.abs(ood - expected_ood(checkpoint, images)).max() <= 1e-4 * ood.max()
