"""`python -m fashion_lightning serve --ckpt_path CKPT [--host 127.0.0.1] [--port 8000] [--workers N]`:
a checkpoint's model behind an HTTP API, with one page to try it on a photo.

The server is LitServe's (Lightning's serving library): `POST /predict` takes a photo as the
multipart field `file` and answers its class and class probabilities as JSON; `GET /health`
answers 200 once the model is loaded; `GET /` is the page (`serve_page.html`, self-contained: it
fetches nothing from elsewhere). Each inference worker rebuilds the model with
`checkpoint.load_model`, and a photo becomes the 28x28 image the model sees through `photos.py`,
exactly as for `predict --data.predict_path`. An unusable upload gets a 4xx status and a JSON
`{"detail": why}`; the worker goes on serving.
"""

import base64
import io
import math
import os
import signal
import socket
from pathlib import Path
from typing import Any, Literal

import litserve as ls
import numpy as np
import torch
from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.routing import APIRoute
from jsonargparse.typing import PositiveFloat, PositiveInt, restricted_number_type
from PIL import Image
from starlette.datastructures import UploadFile

from fashion_lightning import photos
from fashion_lightning.callbacks import verdict
from fashion_lightning.checkpoint import load_model
from fashion_lightning.errors import FashionLightningError
from fashion_lightning.idx import CLASS_NAMES
from fashion_lightning.inference import ProbabilityModel

PAGE = Path(__file__).resolve().parent / "serve_page.html"
# The addresses LitServe's `run` accepts: this machine only, or every IPv4 / IPv6 interface.
Host = Literal["127.0.0.1", "0.0.0.0", "::"]
Port = restricted_number_type("Port", int, [(">=", 1024), ("<=", 65535)])  # LitServe's range
# Room for the multipart boundaries, part headers and the small form fields beside the file:
# LitServe refuses a request body over the upload limit plus this before reading it all.
FORM_OVERHEAD = 64 * 1024
HOW_TO_SEND = "Send the photo as the multipart form field `file` (curl -F file=@photo.jpg)."


class PhotoClassifierAPI(ls.LitAPI):
    """`POST /predict`: one photo in (multipart field `file`), its class probabilities out. With
    the form field `return_image=1` the answer also holds the 28x28 image the model saw, as a
    base64 PNG (the page shows it)."""

    def __init__(self, ckpt_path: str, max_upload_bytes: int) -> None:
        super().__init__(api_path="/predict")
        self.ckpt_path, self.max_upload_bytes = ckpt_path, max_upload_bytes

    def setup(self, device: str) -> None:
        """Runs once in each inference worker process."""
        if device == "cpu":
            # One image is too little work to split across threads, and torch's idle threads
            # spin against the HTTP server's process: on 2 cores one thread serves 5x more
            # requests/s (scripts/bench_serve.py). --workers adds parallelism instead.
            torch.set_num_threads(1)
        self.model = ProbabilityModel(load_model(self.ckpt_path)).to(device)

    def decode_request(self, request) -> tuple[np.ndarray, bool]:
        """The upload as a (28, 28) uint8 image, and whether to send that image back. `request`
        is the parsed form; it stays unannotated, since LitServe reads the annotation as the
        type FastAPI should parse the request into."""
        upload = request.get("file") if hasattr(request, "get") else None
        if not isinstance(upload, UploadFile):
            raise HTTPException(400, HOW_TO_SEND)
        data = upload.file.read(self.max_upload_bytes + 1)
        if not data:
            raise HTTPException(400, f"{upload.filename or 'The upload'} is empty.")
        if len(data) > self.max_upload_bytes:
            raise HTTPException(413, too_large(self.max_upload_bytes))
        try:
            image = photos.to_fashion_mnist(photos.read_photo(io.BytesIO(data)))
        except photos.PhotoError as e:
            raise HTTPException(422, f"{upload.filename or 'The upload'}: {e}.") from None
        return image, request.get("return_image") in ("1", "true")

    def predict(self, x: tuple[np.ndarray, bool]) -> tuple[torch.Tensor, float, np.ndarray | None]:
        image, return_image = x
        batch = torch.from_numpy(image)[None, None].to(self.device)  # (1, 1, 28, 28) uint8
        with torch.inference_mode():
            probabilities, ood_score = self.model(batch)
        return probabilities[0].cpu(), float(ood_score[0]), image if return_image else None

    def encode_response(self, output: tuple[torch.Tensor, float, np.ndarray | None]) -> dict:
        probabilities, ood_score, image = output
        answer = prediction(probabilities.tolist(), ood_score)
        if image is not None:
            answer["model_input_png"] = png_base64(image)
        return answer


class MultipartOnly:
    """ASGI middleware: `POST /predict` with a body that is not a multipart form (a raw image,
    say) gets 415 and how to send it. LitServe would try to parse it as JSON and answer 500."""

    def __init__(self, app: Any, path: str = "/predict") -> None:
        self.app, self.path = app, path

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == self.path:
            content_type = dict(scope["headers"]).get(b"content-type", b"")
            if not content_type.startswith(b"multipart/form-data"):
                await JSONResponse({"detail": HOW_TO_SEND}, status_code=415)(scope, receive, send)
                return
        await self.app(scope, receive, send)


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


def build_server(ckpt_path: str, workers: int = 1, max_upload_mb: float = 10.0) -> ls.LitServer:
    """The LitServer with our API and the page at `GET /` (not yet running)."""
    max_upload_bytes = round(max_upload_mb * 1e6)
    api = PhotoClassifierAPI(ckpt_path, max_upload_bytes)
    server = ls.LitServer(
        api,
        accelerator="auto",
        workers_per_device=workers,
        max_payload_size=max_upload_bytes + FORM_OVERHEAD,
        middlewares=[MultipartOnly],
    )
    page = PAGE.read_text().replace("{{MAX_UPLOAD_BYTES}}", str(max_upload_bytes))
    replace_index(server.app, page, Depends(server.setup_auth()))
    return server


def replace_index(app: FastAPI, page: str, auth: Any) -> None:
    """LitServe answers `GET /` itself ("litserve running"); the page takes that route's place.
    Starlette serves the first route that matches, so the old one is removed, not shadowed."""
    app.router.routes[:] = [
        route for route in app.router.routes
        if not (isinstance(route, APIRoute) and route.path == "/" and "GET" in route.methods)
    ]  # fmt: skip

    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    app.add_api_route("/", index, methods=["GET"], dependencies=[auth], include_in_schema=False)


def serve(
    ckpt_path: str,
    host: Host = "127.0.0.1",
    port: Port = 8000,
    workers: PositiveInt = 1,
    max_upload_mb: PositiveFloat = 10.0,
) -> None:
    """Serve a checkpoint's model over HTTP (LitServe): POST /predict, GET /health, and a page
    at GET / to try it on a photo. Stop it with Ctrl+C (or SIGTERM).

    Args:
        ckpt_path: A checkpoint written by `python -m fashion_lightning fit`.
        host: The address to listen on. 127.0.0.1: this machine only. 0.0.0.0 (or :: for
            IPv6) exposes the server to every network this machine is on, with no
            authentication: do that on purpose only.
        port: The TCP port, 1024 to 65535.
        workers: Inference worker processes per device (each holds a copy of the model).
        max_upload_mb: The largest photo accepted, in megabytes; larger uploads get 413.
    """
    load_model(ckpt_path)  # a bad checkpoint: one paragraph here, not a trace in each worker
    check_port_free(host, port)
    server = build_server(ckpt_path, workers, max_upload_mb)
    stop_quietly_on(signal.SIGINT, signal.SIGTERM)
    shown = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(host, host)  # an address to browse
    print(f"Serving {ckpt_path} at http://{shown}:{port}/ (Ctrl+C stops it)", flush=True)
    server.run(host=host, port=port, generate_client_file=False, log_level="warning")


def stop_quietly_on(*signals: signal.Signals) -> None:
    """Ctrl+C or SIGTERM: the main process raises KeyboardInterrupt, on which LitServe stops its
    worker processes (it handles no SIGTERM itself). Its HTTP server processes are forked with
    these handlers; uvicorn re-raises the signal in them once it has stopped serving, and there
    it ends the process as by default, instead of printing a KeyboardInterrupt traceback."""
    main = os.getpid()

    def handler(signum: int, frame: Any) -> None:
        if os.getpid() == main:
            raise KeyboardInterrupt
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    for signum in signals:
        signal.signal(signum, handler)


def check_port_free(host: str, port: int) -> None:
    """A port already in use: one paragraph naming it, rather than uvicorn's exit after start."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as e:
            raise FashionLightningError(
                f"--port {port}: cannot listen on {host}:{port} ({e.strerror}). Another server "
                f"may be using it: choose another port, e.g. --port {port + 1}."
            ) from None
