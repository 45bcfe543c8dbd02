"""`python -m fashion_lightning serve --ckpt_path CKPT | --model FILE.onnx [--host 127.0.0.1]
[--port 8000] [--workers N] [--max_batch_size 16] [--batch_timeout 0.002]`: a model behind an
HTTP API, with one page to try it on a photo.

The server is LitServe's (Lightning's serving library): `POST /predict` takes a photo as the
multipart field `file` and answers its class and class probabilities as JSON; `GET /health`
answers 200 once the model is loaded; `GET /` is the page (`serve_page.html`, self-contained: it
fetches nothing from elsewhere). Requests that arrive together are answered in one forward pass
(`serve_api.py`); each worker opens the model itself (`runtimes.py`): a checkpoint through the
one inference path, or an exported ONNX file through onnxruntime, in which case no serving process
imports torch. An unusable upload gets a 4xx status and a JSON `{"detail": why}`; the worker goes
on serving. The worker processes die with the command, however it ends.
"""

import os
import signal
import socket
from pathlib import Path
from typing import Any, Literal

import litserve as ls
from fastapi import Depends, FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.routing import APIRoute
from jsonargparse.typing import (
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    restricted_number_type,
)
from starlette.exceptions import HTTPException

from fashion_lightning.deploy.parent_death import forked_children_die_with_their_parent
from fashion_lightning.deploy.runtimes import ModelFile
from fashion_lightning.deploy.serve_api import HOW_TO_SEND, PhotoClassifierAPI, too_large
from fashion_lightning.errors import FashionLightningError

PAGE = Path(__file__).resolve().parent / "serve_page.html"
# The addresses LitServe's `run` accepts: this machine only, or every IPv4 / IPv6 interface.
Host = Literal["127.0.0.1", "0.0.0.0", "::"]
Port = restricted_number_type("Port", int, [(">=", 1024), ("<=", 65535)])  # LitServe's range
# Room for the multipart boundaries, part headers and the small form fields beside the file:
# LitServe refuses a request body over the upload limit plus this before reading it all.
FORM_OVERHEAD = 64 * 1024


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


# Batching: LitServe waits at most this long for a batch to fill once a request is in.
DEFAULT_BATCH_TIMEOUT = 0.002  # seconds; scripts/bench_serve.py: see the README's table


def build_server(
    model: ModelFile,
    workers: int = 1,
    max_upload_mb: float = 10.0,
    max_batch_size: int = 16,
    batch_timeout: float = DEFAULT_BATCH_TIMEOUT,
) -> ls.LitServer:
    """The LitServer with our API and the page at `GET /` (not yet running)."""
    max_upload_bytes = round(max_upload_mb * 1e6)
    api = PhotoClassifierAPI(model, max_upload_bytes, os.getpid(), max_batch_size, batch_timeout)
    server = ls.LitServer(
        api,
        # onnxruntime runs on the CPU here; "auto" would import torch to look for a GPU.
        accelerator="auto" if model.kind == "checkpoint" else "cpu",
        workers_per_device=workers,
        max_payload_size=max_upload_bytes + FORM_OVERHEAD,
        middlewares=[MultipartOnly],
    )
    page = PAGE.read_text().replace("{{MAX_UPLOAD_BYTES}}", str(max_upload_bytes))
    replace_index(server.app, page, Depends(server.setup_auth()))
    server.app.add_exception_handler(HTTPException, told_http_errors(max_upload_bytes))
    return server


def told_http_errors(max_upload_bytes: int) -> Any:
    """An HTTP error's answer, as FastAPI gives it, except LitServe's 413 for a body over the
    limit ("Payload too large"), which names the limit and the option, as every answer does."""

    async def handler(request: Request, error: HTTPException) -> Response:
        if error.status_code == 413:
            return JSONResponse({"detail": too_large(max_upload_bytes)}, status_code=413)
        return await http_exception_handler(request, error)

    return handler


def replace_index(app: FastAPI, page: str, auth: Any) -> None:
    """LitServe answers `GET /` itself ("litserve running"); the page takes that route's place.
    Starlette serves the first route that matches, so the old one is removed, not shadowed."""
    app.router.routes[:] = [
        route
        for route in app.router.routes
        if not (isinstance(route, APIRoute) and route.path == "/" and "GET" in route.methods)
    ]

    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    app.add_api_route("/", index, methods=["GET"], dependencies=[auth], include_in_schema=False)


def serve(
    ckpt_path: str | None = None,
    model: str | None = None,
    host: Host = "127.0.0.1",
    port: Port = 8000,
    workers: PositiveInt | None = None,
    max_batch_size: PositiveInt = 16,
    batch_timeout: NonNegativeFloat = DEFAULT_BATCH_TIMEOUT,
    max_upload_mb: PositiveFloat = 10.0,
) -> None:
    """Serve a checkpoint's model, or an exported ONNX model, over HTTP (LitServe): POST
    /predict, GET /health, and a page at GET / to try it on a photo. Stop it with Ctrl+C (or
    SIGTERM).

    Args:
        ckpt_path: A checkpoint written by `python -m fashion_lightning fit`.
        model: Instead of --ckpt_path: an ONNX file written by `export` (float32 or int8), run
            by onnxruntime; the serving processes then never import torch.
        host: The address to listen on. 127.0.0.1: this machine only. 0.0.0.0 (or :: for
            IPv6) exposes the server to every network this machine is on, with no
            authentication: do that on purpose only.
        port: The TCP port, 1024 to 65535.
        workers: Inference worker processes per device (each holds a copy of the model).
            Default: one per CPU core (at most 4), each on one thread, when serving on the
            CPU, which lets HTTP and preprocessing use every core; one per GPU otherwise.
        max_batch_size: The most requests a worker answers in one forward pass.
        batch_timeout: Seconds a worker waits for more requests to fill a batch (0: take what
            has arrived).
        max_upload_mb: The largest photo accepted, in megabytes; larger uploads get 413.
    """
    model_file = model_to_serve(ckpt_path, model)
    model_file.check()  # a bad file: one paragraph here, not a traceback in each worker
    check_port_free(host, port)
    workers = workers or default_workers(model_file)
    server = build_server(model_file, workers, max_upload_mb, max_batch_size, batch_timeout)
    stop_quietly_on(signal.SIGINT, signal.SIGTERM)
    forked_children_die_with_their_parent()  # a SIGKILL must not leave HTTP servers behind
    shown = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(host, host)  # an address to browse
    print(f"Serving {model_file.path} at http://{shown}:{port}/ (Ctrl+C stops it)", flush=True)
    server.run(host=host, port=port, generate_client_file=False, log_level="warning")


def default_workers(model: ModelFile) -> int:
    """One worker per CPU core (at most 4) on the CPU; one per GPU. On 2 cores, 2 workers serve
    32 clients 2x faster than 1 (scripts/bench_serve.py; see the README)."""
    cores = min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1, 4)
    if model.kind != "checkpoint":
        return cores  # onnxruntime serves on the CPU here
    import torch  # a checkpoint's workers run torch anyway; an ONNX model's never import it

    return 1 if torch.cuda.is_available() else cores


def model_to_serve(ckpt_path: str | None, model: str | None) -> ModelFile:
    """The one model file the options name: --ckpt_path or --model, never both."""
    if (ckpt_path is None) == (model is None):
        given = "both --ckpt_path and --model" if model else "neither --ckpt_path nor --model"
        raise FashionLightningError(
            f"serve was given {given}: name one model, either a checkpoint (--ckpt_path "
            f"lightning_logs/version_0/checkpoints/last.ckpt) or an exported ONNX file "
            f"(--model model.onnx, written by `python -m fashion_lightning export`)."
        )
    return ModelFile(ckpt_path, "checkpoint") if ckpt_path else ModelFile(model, "onnx")


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
