"""`POST /predict`: what one request becomes in a serving worker, and what it gets back.

LitServe gathers up to `max_batch_size` requests (waiting at most `batch_timeout` seconds for the
batch to fill), and the worker decodes each upload into the 28x28 image the model sees through
`photos.py`, then runs one forward pass for the whole batch. An unusable upload does not fail the
others of its batch: it travels through the batch as a `Refusal` and comes back alone as a 4xx
with a JSON `{"detail": why}`. Nothing here imports torch (see `runtimes.py`).
"""

import base64
import io
import math
import os
import signal
from dataclasses import dataclass

import litserve as ls
import numpy as np
from fastapi.responses import JSONResponse
from PIL import Image
from starlette.datastructures import UploadFile

from fashion_lightning.data import photos
from fashion_lightning.data.idx import CLASS_NAMES
from fashion_lightning.deploy.parent_death import die_with_parent
from fashion_lightning.deploy.runtimes import ModelFile, Outputs, Runtime
from fashion_lightning.evaluation.verdict import verdict

HOW_TO_SEND = "Send the photo as the multipart form field `file` (curl -F file=@photo.jpg)."


@dataclass(frozen=True)
class Photo:
    """A decoded upload: the (28, 28) uint8 image the model sees, and whether to send it back."""

    image: np.ndarray
    return_image: bool


@dataclass(frozen=True)
class Refusal:
    """An upload the server cannot use: the HTTP status and the reason for its `detail`."""

    status: int
    detail: str

    def response(self) -> JSONResponse:
        return JSONResponse({"detail": self.detail}, status_code=self.status)


@dataclass(frozen=True)
class Answer:
    """One image's row of every model output, and the image when the client asked for it."""

    outputs: dict[str, np.ndarray]
    image: np.ndarray | None


class PhotoClassifierAPI(ls.LitAPI):
    """`POST /predict`: one photo in (multipart field `file`), its class probabilities out. With
    the form field `return_image=1` the answer also holds the 28x28 image the model saw, as a
    base64 PNG (the page shows it)."""

    def __init__(
        self,
        model: ModelFile,
        max_upload_bytes: int,
        parent_pid: int,
        max_batch_size: int = 1,
        batch_timeout: float = 0.0,
    ) -> None:
        super().__init__(
            api_path="/predict", max_batch_size=max_batch_size, batch_timeout=batch_timeout
        )
        self.model_file, self.max_upload_bytes = model, max_upload_bytes
        self.parent_pid = parent_pid

    def setup(self, device: str) -> None:
        """Runs once in each inference worker process."""
        if os.getpid() != self.parent_pid:  # a worker process (not a test's own process)
            die_with_parent(self.parent_pid)  # a SIGKILLed `serve` leaves no worker behind
            # Ctrl+C in a terminal reaches the whole process group; `serve` itself stops its
            # workers, which would otherwise each print a KeyboardInterrupt traceback.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        # One thread: torch's or onnxruntime's idle threads spin against the HTTP server's
        # process, and on 2 cores one thread serves more requests/s (scripts/bench_serve.py).
        # --workers adds parallelism instead.
        self.runtime: Runtime = self.model_file.open(device, threads=1)

    def decode_request(self, request) -> Photo | Refusal:
        """The upload as a `Photo`, or why it cannot be one. `request` is the parsed form; it
        stays unannotated, since LitServe reads the annotation as the type FastAPI should parse
        the request into."""
        upload = request.get("file") if hasattr(request, "get") else None
        if not isinstance(upload, UploadFile):
            return Refusal(400, HOW_TO_SEND)
        name = upload.filename or "The upload"
        data = upload.file.read(self.max_upload_bytes + 1)
        if not data:
            return Refusal(400, f"{name} is empty.")
        if len(data) > self.max_upload_bytes:
            return Refusal(413, too_large(self.max_upload_bytes))
        try:
            image = photos.to_fashion_mnist(photos.read_photo(io.BytesIO(data)))
        except photos.PhotoError as e:
            return Refusal(422, f"{name}: {e}.")
        return Photo(image, request.get("return_image") in ("1", "true"))

    def predict(self, x: list[Photo | Refusal] | Photo | Refusal) -> list | Answer | Refusal:
        """One forward pass over every usable photo of the batch (LitServe's default `batch`
        hands over the list of decoded requests; a lone request when it does not batch);
        refusals keep their places."""
        items = x if isinstance(x, list) else [x]
        usable = [i for i, item in enumerate(items) if isinstance(item, Photo)]
        images = np.stack([items[i].image for i in usable])[:, None] if usable else None
        outputs = self.runtime(images) if usable else {}  # (N, 1, 28, 28) uint8 in
        answers: list[Answer | Refusal] = list(items)
        for row, i in enumerate(usable):
            answers[i] = answer_of(items[i], outputs, row)
        return answers if isinstance(x, list) else answers[0]

    def encode_response(self, output: Answer | Refusal):
        """The answer's JSON, or the refusal's 4xx response. No return annotation: LitServe
        would read it as the response model FastAPI validates against."""
        if isinstance(output, Refusal):
            return output.response()
        outputs = output.outputs
        answer = prediction(outputs["probabilities"].tolist(), float(outputs["ood_score"]))
        if output.image is not None:
            answer["model_input_png"] = png_base64(output.image)
        return answer


def answer_of(photo: Photo, outputs: Outputs, row: int) -> Answer:
    """The `row`th image's share of the batch's outputs."""
    image = photo.image if photo.return_image else None
    return Answer({name: values[row] for name, values in outputs.items()}, image)


def prediction(probabilities: list[float], ood_score: float) -> dict:
    """The answer's JSON: the most probable class, its probability and every class's, the ood
    score (null when the checkpoint has no ood fit) and the verdict."""
    best = int(np.argmax(probabilities))
    return {
        "class": CLASS_NAMES[best],
        "confidence": probabilities[best],
        "probabilities": dict(zip(CLASS_NAMES, probabilities)),
        "ood_score": None if math.isnan(ood_score) else ood_score,
        "verdict": verdict(ood_score),
    }


def png_base64(image: np.ndarray) -> str:
    """A (28, 28) uint8 image as base64 PNG text, for a `data:image/png;base64,` URL."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def too_large(max_upload_bytes: int) -> str:
    """The 413 answer's reason, naming the limit and the option that sets it."""
    return (
        f"The upload is larger than the server's limit of {max_upload_bytes / 1e6:g} MB "
        f"(serve --max_upload_mb). A smaller photo works as well: the model sees 28x28 pixels."
    )
