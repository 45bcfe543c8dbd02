"""What a serving worker runs: a model file opened as `uint8 images (N, 1, 28, 28) -> named outputs`.

Two kinds of file: a checkpoint (torch, through `inference.ProbabilityModel`, the one inference
path) and an ONNX file that `export` wrote (onnxruntime alone). This module imports neither torch
nor Lightning: the checkpoint's runtime imports them when it opens, so a process that serves an
ONNX file never loads them. Both answer a dict of named outputs (`probabilities`, `ood_score`); the ONNX
graph's output names are the keys, so an output added to the inference path and the export is
one more key here, with nothing to change.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from fashion_lightning.errors import FashionLightningError

Outputs = dict[str, np.ndarray]  # output name -> (N, ...) array, one row per image
Runtime = Callable[[np.ndarray], Outputs]  # uint8 images (N, 1, 28, 28) -> outputs
INPUT_SHAPE = [1, 28, 28]  # after the batch axis
EXPORT_HINT = "export a checkpoint with `python -m fashion_lightning export --ckpt_path CKPT`"


@dataclass(frozen=True)
class ModelFile:
    """A model file to serve, named by the option that gave it (`--ckpt_path` or `--model`).
    Small and picklable: LitServe sends it to each worker process, which opens it there."""

    path: str
    kind: Literal["checkpoint", "onnx"]

    @property
    def option(self) -> str:
        return "--ckpt_path" if self.kind == "checkpoint" else "--model"

    def check(self) -> None:
        """Open it once in this process: a bad file is one paragraph here, not a traceback in
        every worker."""
        self.open("cpu")

    def open(self, device: str, threads: int = 1) -> Runtime:
        """The runtime, on `device` ("cpu", "cuda:0", ...) with `threads` CPU threads."""
        if self.kind == "checkpoint":
            return open_checkpoint(self.path, device, threads)
        return open_onnx(self.path, threads)


def open_checkpoint(path: str, device: str, threads: int) -> Runtime:
    """A checkpoint's `ProbabilityModel`; imports torch (and Lightning) now, not before."""
    import torch

    from fashion_lightning.evaluation.inference import ProbabilityModel
    from fashion_lightning.training.checkpoint import load_model

    if device == "cpu":
        torch.set_num_threads(threads)
    model = ProbabilityModel(load_model(path)).to(device)

    def run(images: np.ndarray) -> Outputs:
        with torch.inference_mode():
            probabilities, ood_score = model(torch.from_numpy(images).to(device))  # (N, C), (N,)
        return {"probabilities": probabilities.cpu().numpy(), "ood_score": ood_score.cpu().numpy()}

    return run


def open_onnx(path: str, threads: int) -> Runtime:
    """An exported ONNX model under onnxruntime's CPU provider."""
    session = onnx_session(path, threads)
    (image_input,) = session.get_inputs()
    names = [output.name for output in session.get_outputs()]

    def run(images: np.ndarray) -> Outputs:
        return dict(zip(names, session.run(names, {image_input.name: images})))

    return run


def session_options(threads: int):
    """onnxruntime's options for every session of the project (serve and the benchmark alike):
    `threads` threads inside an operator, none across operators, every graph optimization."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def onnx_session(path: str, threads: int):
    """An onnxruntime session of `path`, refused in one paragraph unless it is a model that
    `export` wrote (one uint8 input of shape (N, 1, 28, 28), class probabilities among its
    outputs)."""
    try:
        import onnxruntime
    except ImportError:
        raise FashionLightningError(
            "Serving an ONNX model needs onnxruntime: pip install 'fashion_lightning[export]'."
        ) from None
    if not Path(path).is_file():
        raise FashionLightningError(f"--model {path} does not exist. To make one, {EXPORT_HINT}.")
    try:
        session = onnxruntime.InferenceSession(
            path, session_options(threads), providers=["CPUExecutionProvider"]
        )
    except Exception as e:  # onnxruntime's errors share no base class beyond Exception
        reason = " ".join(str(e).split())
        raise FashionLightningError(
            f"--model {path} is not an ONNX model onnxruntime can load ({reason}). Serve a file "
            f"that `export` wrote ({EXPORT_HINT}), or a checkpoint with --ckpt_path."
        ) from None
    check_signature(path, session)
    return session


def check_signature(path: str, session) -> None:
    """The graph must take what `export` writes: uint8 images (N, 1, 28, 28)."""
    inputs, outputs = session.get_inputs(), [o.name for o in session.get_outputs()]
    shapes = [(i.type, i.shape[1:]) for i in inputs]
    if shapes != [("tensor(uint8)", INPUT_SHAPE)] or {"probabilities", "ood_score"} - set(outputs):
        got = ", ".join(f"{i.name}: {i.type} {i.shape}" for i in inputs)
        raise FashionLightningError(
            f"--model {path} is an ONNX model, but not one `export` wrote: it takes {got} and "
            f"answers {', '.join(outputs)}, where serve sends uint8 images (N, 1, 28, 28) and "
            f"reads `probabilities` and `ood_score`. {EXPORT_HINT[0].upper()}{EXPORT_HINT[1:]}."
        )
