"""int8 ONNX models: static post-training quantization of a float32 export (onnxruntime).

Static quantization fixes every activation's int8 scale in advance, from the ranges the float32
model reaches on calibration images: training images, never the test set that the accuracy is
measured on. The graph keeps the float32 export's interface (uint8 images in, the same named
outputs), so whatever runs one runs the other. The format and its settings are those that ran
fastest here while holding accuracy (`scripts/bench_export.py`, README): QDQ with per-channel
weights, which onnxruntime fuses into int8 convolutions and matrix products.

Weights use 7 of their 8 bits (`reduce_range`). On x86 CPUs without VNNI (AVX2 only, such as AMD
Zen 3) onnxruntime multiplies uint8 by int8 with VPMADDUBSW, whose int16 pair sums saturate on
full-range weights: there a tiny test model's int8 export changed the class of one image in ten
(the trained default CNN, less sensitive, lost 0.16 points with 8-bit weights and 0.11 with 7-bit).
The file must answer the same wherever it is served, so it is made for the weakest CPU.
"""

import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

CALIBRATION_IMAGES = 1024  # ranges settle by then; more only costs export time
CALIBRATION_BATCH = 128
CALIBRATION_SEED = 0
# Ops left in float32: the softmax, so the probabilities keep their full resolution (quantized,
# they would come in steps of 1/255) at no cost worth measuring.
FLOAT_OPS = {"Softmax"}


class ImageBatches(CalibrationDataReader):
    """Calibration batches of uint8 images (N, 1, 28, 28) fed to the graph's input."""

    def __init__(self, input_name: str, images: np.ndarray) -> None:
        self.input_name, self.images = input_name, images
        self.batches: Iterator[np.ndarray] = self.split()

    def split(self) -> Iterator[np.ndarray]:
        return (
            self.images[i : i + CALIBRATION_BATCH]
            for i in range(0, len(self.images), CALIBRATION_BATCH)
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self.batches, None)
        return None if batch is None else {self.input_name: batch}

    def rewind(self) -> None:
        self.batches = self.split()


def calibration_sample(train_images: np.ndarray) -> np.ndarray:
    """A fixed random sample of the training images (N, 1, 28, 28) uint8 to calibrate with."""
    rng = np.random.default_rng(CALIBRATION_SEED)
    n = min(CALIBRATION_IMAGES, len(train_images))
    return train_images[np.sort(rng.choice(len(train_images), n, replace=False))]


def quantize_int8(
    float_model: Path,
    out: Path,
    train_images: np.ndarray,
    quant_format: QuantFormat = QuantFormat.QDQ,
    per_channel: bool = True,
    reduce_range: bool = True,
) -> None:
    """Write an int8 copy of the float32 ONNX model `float_model` to `out`, calibrated on a
    sample of `train_images`. quant_pre_process first folds BatchNorm into the convolutions and
    infers every tensor's shape, as the quantizer needs. `reduce_range`: 7-bit weights, exact on
    CPUs without VNNI (module docstring)."""
    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(float_model), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(out),
            ImageBatches("images", calibration_sample(train_images)),
            quant_format=quant_format,
            per_channel=per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            reduce_range=reduce_range,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=[
                n.name for n in onnx.load(prepared).graph.node if n.op_type in FLOAT_OPS
            ],
        )
