"""Exported models (ONNX, TorchScript) give the checkpoint's calibrated probabilities and ood
scores on real test images."""

import json
import warnings
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from conftest import FittedRun, config, flat

from fashion_lightning.cli.main import cli_main
from fashion_lightning.data import idx
from fashion_lightning.data.datamodule import normalize
from fashion_lightning.deploy.export import SUFFIXES
from fashion_lightning.evaluation.inference import ProbabilityModel
from fashion_lightning.training.checkpoint import load_model

BATCH_SIZES = (1, 100)


def checkpoint_copy(request, shared_fit: str, run_dir: Path) -> str:
    """The best checkpoint of a shared tiny fit, copied here: the export is written beside it."""
    fitted: FittedRun = request.getfixturevalue(shared_fit)
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


SLOW_EXPORT = pytest.mark.slow  # the dynamo ONNX exporter: seconds a network on 2 cores


# cnn_fit: a CNN with flip TTA; airbench_fit: with flip x translate TTA and a whitened stem. One
# ONNX export in the fast suite (the CNN's: TTA in the graph); every network in TorchScript.
@pytest.mark.parametrize(
    ("shared_fit", "fmt", "run"),
    [
        ("cnn_fit", "onnx", run_onnx),
        pytest.param("mlp_fit", "onnx", run_onnx, marks=SLOW_EXPORT),
        pytest.param("airbench_fit", "onnx", run_onnx, marks=SLOW_EXPORT),
        *((fit, "torchscript", run_torchscript) for fit in ("mlp_fit", "cnn_fit", "airbench_fit")),
    ],
)
def test_export_matches_the_checkpoint(request, shared_fit, fmt, run, run_dir, test_images) -> None:
    checkpoint = checkpoint_copy(request, shared_fit, run_dir)
    out = cli_main(["export", f"--ckpt_path={checkpoint}", f"--format={fmt}"])
    assert out == Path(checkpoint).with_suffix(SUFFIXES[fmt])  # beside the checkpoint
    assert not list(out.parent.glob(".*partial"))
    if fmt == "onnx":  # the file alone says what it predicts and how to feed it
        meta = onnxruntime.InferenceSession(str(out)).get_modelmeta().custom_metadata_map
        assert json.loads(meta["classes"]) == list(idx.CLASS_NAMES) and "uint8" in meta["input"]
        assert meta["producer"].startswith("fashion_lightning ") and meta["weights"] == "float32"
    for n in BATCH_SIZES:
        images = test_images[:n]
        (got, ood), want = run(out, images), expected_probs(checkpoint, images)
        assert got.shape == (n, 10) and got.dtype == np.float32
        assert np.abs(got - want).max() <= 1e-5
        assert (got.argmax(axis=1) == want.argmax(axis=1)).all()
        assert ood.shape == (n,) and np.isfinite(ood).all()  # the fit wrote an ood fit
        assert np.abs(ood - expected_ood(checkpoint, images)).max() <= 1e-4 * ood.max()


def test_an_unwritable_out_is_one_paragraph_and_leaves_nothing(
    mlp_fit: FittedRun, tmp_path: Path, capsys
) -> None:
    (tmp_path / "a_file").write_text("not a folder")
    out = tmp_path / "a_file" / "model.pt"  # a path under a file: no folder can be made there
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["export", f"--ckpt_path={mlp_fit.best}", "--format=torchscript", f"--out={out}"])
    error = flat(capsys.readouterr().err)
    assert exit_info.value.code == 2 and "Traceback" not in error
    assert f"--out {out}: cannot write there" in error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_quantize_with_torchscript_is_one_paragraph(mlp_fit: FittedRun, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        options = ["--format=torchscript", "--quantize=int8", f"--out={tmp_path / 'model.pt'}"]
        cli_main(["export", f"--ckpt_path={mlp_fit.best}", *options])
    assert exit_info.value.code == 2
    assert "--quantize int8 needs --format onnx" in flat(capsys.readouterr().err)
    assert not list(tmp_path.iterdir())


def int8_and_float_exports(ckpt_path: Path, folder: Path) -> tuple[Path, Path]:
    """The checkpoint exported to ONNX twice: int8 (calibrated on its training images), float32."""
    export = ["export", f"--ckpt_path={ckpt_path}"]
    int8 = cli_main([*export, "--quantize=int8", f"--out={folder / 'model.int8.onnx'}"])
    float32 = cli_main([*export, f"--out={folder / 'model.onnx'}"])
    return int8, float32


@SLOW_EXPORT
def test_int8_export_keeps_the_interface_and_the_classes_at_a_third_of_the_size(
    mlp_fit: FittedRun, fake_data_dir: Path, tmp_path: Path
) -> None:
    int8, float32 = int8_and_float_exports(mlp_fit.best, tmp_path)
    assert int8.stat().st_size <= float32.stat().st_size / 3
    meta = onnxruntime.InferenceSession(str(int8)).get_modelmeta().custom_metadata_map
    assert meta["weights"] == "int8" and "classes" in meta
    images = idx.load_split(fake_data_dir, "test")[0][:, None]  # (40, 1, 28, 28) uint8
    got, want = run_onnx(int8, images)[0], expected_probs(str(mlp_fit.best), images)
    assert got.shape == want.shape and got.dtype == np.float32
    assert np.allclose(got.sum(axis=1), 1, atol=0.02)
    assert (got.argmax(axis=1) == want.argmax(axis=1)).mean() >= 0.95
    assert np.abs(got - want).max() < 0.1  # int8 steps, not another model


@pytest.mark.slow  # a real-data fit, then both exports and the 10k test images
def test_int8_export_of_a_real_model_agrees_with_it_on_99_percent_of_the_test_set(
    real_data_dir: Path, run_dir: Path
) -> None:
    quick = ["--trainer.max_epochs=1", "--trainer.enable_progress_bar=false"]
    cli = cli_main(["fit", config("mlp"), *quick, "--trainer.precision=32-true"])
    ckpt_path = Path(cli.trainer.checkpoint_callback.last_model_path)
    int8, float32 = int8_and_float_exports(ckpt_path, run_dir)
    images, labels = idx.load_split(real_data_dir, "test")
    got, want = run_onnx(int8, images[:, None])[0], expected_probs(str(ckpt_path), images[:, None])
    assert (got.argmax(axis=1) == want.argmax(axis=1)).mean() >= 0.99
    accuracy = [(p.argmax(axis=1) == labels).mean() for p in (got, want)]
    assert abs(accuracy[0] - accuracy[1]) <= 0.005, accuracy
