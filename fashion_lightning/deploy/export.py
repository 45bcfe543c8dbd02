"""`python -m fashion_lightning export --ckpt_path CKPT [--format onnx|torchscript] [--quantize int8]
[--out PATH]`: a trained model as one self-contained file that runs without this package.

The exported graph takes uint8 images `(N, 1, 28, 28)` exactly as the data set stores them, does
the normalization itself, runs the network (averaging an image and its mirror image when the
checkpoint uses flip test-time augmentation) and returns two outputs: `probabilities` `(N, 10)`
float32, temperature-scaled, and `ood_score` `(N,)` float32 (above 1: not clothing; NaN for a
checkpoint without an ood fit). The batch axis is dynamic. The file is written beside its final
name and renamed into place. `--quantize int8` (ONNX) writes the same interface with int8
weights and activations (`quantize.py`), calibrated on the checkpoint's training images.
"""

import json
import warnings
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from fashion_lightning.atomic import atomic_path
from fashion_lightning.data.datamodule import FashionMNISTDataModule
from fashion_lightning.data.idx import CLASS_NAMES
from fashion_lightning.errors import FashionLightningError
from fashion_lightning.evaluation.inference import ProbabilityModel
from fashion_lightning.training.checkpoint import load_model

Format = Literal["onnx", "torchscript"]
SUFFIXES: dict[str, str] = {"onnx": ".onnx", "torchscript": ".pt"}
INT8_SUFFIX = ".int8.onnx"


def export(
    ckpt_path: str,
    format: Format = "onnx",
    out: str | None = None,
    quantize: Literal["int8"] | None = None,
    data_dir: str | None = None,
) -> Path:
    """Export a checkpoint's model for use outside Python training code (ONNX or TorchScript).

    Args:
        ckpt_path: A checkpoint written by `python -m fashion_lightning fit`.
        format: `onnx` (run it with onnxruntime, no torch needed) or `torchscript`
            (`torch.jit.load`).
        out: The file to write. Default: the checkpoint's path with .onnx or .pt as suffix
            (.int8.onnx when quantized).
        quantize: `int8`: an ONNX model with int8 weights and activations, a quarter of the
            size and faster on CPUs with int8 instructions; calibrated on training images.
        data_dir: Folder with the IDX files to calibrate --quantize on; default: the one the
            checkpoint was trained on.
    """
    if quantize and format != "onnx":
        raise FashionLightningError(
            f"--quantize {quantize} needs --format onnx (onnxruntime quantizes the exported "
            f"graph); a TorchScript export stays float32. Drop --quantize or use --format onnx."
        )
    model = ProbabilityModel(load_model(ckpt_path))
    suffix = INT8_SUFFIX if quantize else SUFFIXES[format]
    target = Path(out) if out else Path(ckpt_path).with_suffix(suffix)
    try:
        with atomic_path(target) as partial, torch.no_grad():
            WRITERS[format](model, partial)
            if quantize:
                quantize_in_place(partial, ckpt_path, data_dir)
            if format == "onnx":
                describe_onnx(partial, quantize)
    except OSError as e:
        raise FashionLightningError(
            f"--out {target}: cannot write there ({e.strerror}). Choose a file in a folder you can "
            f"write to, e.g. --out exported/model{SUFFIXES[format]}."
        ) from None
    print(f"Exported {format}{f' {quantize}' if quantize else ''} model to {target}")
    return target


def example_images(n: int = 2) -> Tensor:
    """A batch of uint8 images to trace the model with."""
    return torch.zeros(n, 1, 28, 28, dtype=torch.uint8)


def write_onnx(model: ProbabilityModel, path: Path) -> None:
    """ONNX through torch's dynamo exporter, batch axis dynamic, weights inside the one file."""
    try:
        import onnxscript  # noqa: F401 - the exporter needs it; fail here with the fix
    except ImportError:
        raise FashionLightningError(
            "Exporting to ONNX needs the packages onnx and onnxscript: "
            "pip install 'fashion_lightning[export]' (or choose --format torchscript)."
        ) from None
    batch = torch.export.Dim("batch", min=1, max=65536)
    program = torch.onnx.export(
        model,
        (example_images(),),
        dynamo=True,
        input_names=["images"],
        output_names=["probabilities", "ood_score"],
        dynamic_shapes=({0: batch},),
        verbose=False,
    )
    program.save(str(path), external_data=False)


def describe_onnx(path: Path, quantize: str | None) -> None:
    """Write into the ONNX file's metadata what it predicts and how to feed it, so the file alone
    says so (onnxruntime: `session.get_modelmeta().custom_metadata_map`)."""
    import onnx

    graph = onnx.load(str(path))
    onnx.helper.set_model_props(
        graph,
        {
            "classes": json.dumps(list(CLASS_NAMES)),
            "input": "images: uint8 (N, 1, 28, 28), 0-255 as Fashion-MNIST stores them (a light "
            "garment on a dark background); the graph normalizes them itself",
            "outputs": "probabilities: float32 (N, 10), temperature-scaled, in the order of "
            "`classes`; ood_score: float32 (N,), above 1 means not clothing",
            "weights": "int8" if quantize else "float32",
            "producer": f"fashion_lightning {version('fashion_lightning')}",
        },
    )
    onnx.save(graph, str(path))


def quantize_in_place(path: Path, ckpt_path: str, data_dir: str | None) -> None:
    """Replace the float32 ONNX model at `path` by its int8 copy, calibrated on the training
    split of the checkpoint's data (never the test set)."""
    try:
        from fashion_lightning.deploy.quantize import quantize_int8
    except ImportError:
        raise FashionLightningError(
            "--quantize int8 needs onnxruntime: pip install 'fashion_lightning[export]'."
        ) from None
    overrides = {"data_dir": data_dir} if data_dir else {}  # else the data it was trained on
    datamodule = FashionMNISTDataModule.load_from_checkpoint(ckpt_path, **overrides)
    datamodule.load()
    quantize_int8(path, path, datamodule.splits["train"][0].numpy())


def write_torchscript(model: ProbabilityModel, path: Path) -> None:
    """TorchScript by tracing: the networks have no data-dependent control flow."""
    with warnings.catch_warnings():  # torch 2.14 deprecates TorchScript; it still loads in C++
        warnings.filterwarnings("ignore", message=".*torch.jit.trace.* is deprecated")
        traced = torch.jit.trace(model, example_images())
    traced.save(str(path))


WRITERS: dict[str, Callable[[ProbabilityModel, Path], None]] = {
    "onnx": write_onnx,
    "torchscript": write_torchscript,
}
