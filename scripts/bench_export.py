"""Benchmark: a checkpoint under torch, its float32 ONNX export and its int8 ONNX export, side by
side in one run: test accuracy, file size, and images/s at batch 1 and 256 on this machine.

Both ONNX models run under onnxruntime with the same session options (`runtimes.session_options`:
the same thread count, every graph optimization), and torch with as many threads; the ratios are
against the float32 ONNX model. The int8 model is calibrated on training images (never the test
set), exactly as `export --quantize int8` does; `--variants` adds the other quantization formats
to the table, to choose the fastest that holds accuracy.

    python scripts/bench_export.py --ckpt_path CKPT [--seconds 3] [--threads N]
        [--variants qdq-pc,qdq,qop-pc,qop,qdq-pc-8bit]
"""

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from hardware_peak import describe, read_cpu
from onnxruntime.quantization import QuantFormat

from fashion_lightning.data.datamodule import FashionMNISTDataModule
from fashion_lightning.deploy.export import export
from fashion_lightning.deploy.quantize import quantize_int8
from fashion_lightning.deploy.runtimes import session_options
from fashion_lightning.evaluation.inference import ProbabilityModel
from fashion_lightning.training.checkpoint import load_model

BATCH_SIZES = (1, 256)
# name -> (quantization format, per-channel weights); the first is what export --quantize writes
VARIANTS = {  # quantize_int8's (format, per-channel weights, 7-bit weights)
    "qdq-pc": (QuantFormat.QDQ, True, True),
    "qdq": (QuantFormat.QDQ, False, True),
    "qop-pc": (QuantFormat.QOperator, True, True),
    "qop": (QuantFormat.QOperator, False, True),
    "qdq-pc-8bit": (QuantFormat.QDQ, True, False),  # full-range weights: saturate without VNNI
}
Predict = Callable[[np.ndarray], np.ndarray]  # uint8 images (N, 1, 28, 28) -> probabilities


def torch_model(ckpt_path: str) -> Predict:
    model = ProbabilityModel(load_model(ckpt_path))

    def predict(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(images))[0].numpy()  # (probabilities, ood scores)

    return predict


def onnx_model(path: Path, threads: int) -> Predict:
    session = onnxruntime.InferenceSession(
        str(path), session_options(threads), providers=["CPUExecutionProvider"]
    )
    return lambda images: session.run(["probabilities"], {"images": images})[0]


def accuracy(predict: Predict, images: np.ndarray, labels: np.ndarray) -> float:
    probabilities = np.concatenate(
        [predict(images[i : i + 1000]) for i in range(0, len(images), 1000)]
    )
    return float((probabilities.argmax(axis=1) == labels).mean())


def images_per_second(predict: Predict, images: np.ndarray, batch: int, seconds: float) -> float:
    """Distinct batches back to back for `seconds`, after a few to warm up."""
    starts = range(0, len(images) - batch + 1, batch)
    batches = [images[i : i + batch] for i in starts]
    for b in batches[:3]:
        predict(b)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        predict(batches[done % len(batches)])
        done += 1
    return done * batch / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt_path", required=True, help="a trained checkpoint")
    parser.add_argument("--seconds", type=float, default=3.0, help="time bound of each speed")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads")
    parser.add_argument("--variants", default="qdq-pc", help=f"int8 formats: {','.join(VARIANTS)}")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    datamodule = FashionMNISTDataModule.load_from_checkpoint(args.ckpt_path)
    datamodule.load()
    train_images = datamodule.splits["train"][0].numpy()
    images, labels = (t.numpy() for t in datamodule.splits["test"])
    print(
        f"CPU: {describe(read_cpu())}; {os.cpu_count()} cores; {args.threads} threads; "
        f"onnxruntime {onnxruntime.__version__}, torch {torch.__version__}"
    )
    with tempfile.TemporaryDirectory() as folder:
        float32 = export(args.ckpt_path, out=str(Path(folder) / "model.onnx"))
        models = {"checkpoint (torch)": (torch_model(args.ckpt_path), Path(args.ckpt_path))}
        models["ONNX float32"] = (onnx_model(float32, args.threads), float32)
        for name in args.variants.split(","):
            int8 = Path(folder) / f"{name}.onnx"
            quantize_int8(float32, int8, train_images, *VARIANTS[name])
            models[f"ONNX int8 ({name})"] = (onnx_model(int8, args.threads), int8)
        rows = {
            name: measure(predict, path, images, labels, args.seconds)
            for name, (predict, path) in models.items()
        }
    print_table(rows)


def measure(predict: Predict, path: Path, images, labels, seconds: float) -> dict[str, float]:
    speeds = {f"b{b}": images_per_second(predict, images, b, seconds) for b in BATCH_SIZES}
    return {"acc": accuracy(predict, images, labels), "mb": path.stat().st_size / 1e6, **speeds}


def print_table(rows: dict[str, dict[str, float]]) -> None:
    base = rows["ONNX float32"]
    speeds = [f"b{b}" for b in BATCH_SIZES]
    print(
        "\n| model | test acc | size MB | "
        + " | ".join(f"images/s, batch {b}" for b in BATCH_SIZES)
        + " |"
    )
    print("|---|---:|---:|" + "---:|" * len(BATCH_SIZES))
    for name, r in rows.items():
        cells = [f"{r['mb']:.2f} ({r['mb'] / base['mb']:.2f}x)"]
        cells += [f"{r[k]:.0f} ({r[k] / base[k]:.2f}x)" for k in speeds]
        print(f"| {name} | {r['acc']:.2%} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
