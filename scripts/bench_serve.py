"""Benchmark: `python -m fashion_lightning serve` answering photos over HTTP, on this machine.

A real server (the command itself, on a free port of 127.0.0.1) gets 200 distinct product-style
JPEG photos of real test images (a dark garment on an off-white canvas, 224x224 in 400x330, about
10 kB) as `POST /predict` uploads from 1, 8 and 32 clients (threads), each sending requests back to
back, each phase bounded in requests and seconds. It prints requests/s and the latency percentiles
(p50, p95) of each phase beside the baseline: the same work in one process without HTTP
(photos.py's preprocessing and the same runtime with the same single thread as a serving worker),
one photo at a time, and batched as the server batches. The ratio is against the one-at-a-time
loop, so above 1x the server's batching has paid for HTTP. The clients share the CPU with the
server: on 2 cores both count.

    python scripts/bench_serve.py [--ckpt_path CKPT | --model FILE.onnx] [--workers N]
        [--max_batch_size 16] [--batch_timeout 0.002] [--seconds 6]

Without --ckpt_path it times the default recipe's network (the shipped CNN) from a one-step fit:
speed does not depend on the weights.
"""

import argparse
import io
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2
import numpy as np
from hardware_peak import describe, read_cpu
from PIL import Image

from fashion_lightning.cli.lightning import make_cli
from fashion_lightning.data import idx, photos
from fashion_lightning.deploy.runtimes import ModelFile
from fashion_lightning.deploy.serve import DEFAULT_BATCH_TIMEOUT

N_PHOTOS = 200
MAX_REQUESTS = 4000  # per phase, beside its time bound
CLIENTS = (1, 8, 32)


def product_photos(folder: Path) -> list[Path]:
    """Real test images as the photos a shop would take: dark on off-white, JPEG."""
    images = idx.load_split(idx.find_data_dir(download=False), "test")[0][:N_PHOTOS]
    paths = []
    for i, image in enumerate(images):
        garment = np.asarray(Image.fromarray(image).resize((224, 224), Image.Resampling.BICUBIC))
        canvas = np.full((400, 330), 245, dtype=np.uint8)
        canvas[60:284, 60:284] = 245 - garment.astype(np.int32) * 245 // 255
        paths.append(folder / f"photo{i}.jpg")
        Image.fromarray(canvas).convert("RGB").save(paths[-1], quality=90)
    return paths


def one_step_checkpoint(folder: Path) -> str:
    """The default recipe's network after one training step: a real checkpoint to serve."""
    os.chdir(folder)
    cli = make_cli(
        [
            "fit",
            "--trainer.max_steps=1",
            "--trainer.limit_val_batches=1",
            "--trainer.limit_test_batches=0",
            "--trainer.enable_progress_bar=false",
        ]
    )
    return str(Path(cli.trainer.checkpoint_callback.last_model_path).resolve())


def in_process(
    model: ModelFile, files: list[Path], seconds: float, batch: int
) -> tuple[float, list[float]]:
    """The baseline: the photos' bytes preprocessed and run `batch` at a time by the runtime a
    serving worker opens (one thread), no HTTP. Requests/s, and each photo's latency (its
    batch's time)."""
    runtime = model.open("cpu", threads=1)
    contents = [f.read_bytes() for f in files]
    latencies, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds and len(latencies) < MAX_REQUESTS:
        t0 = time.perf_counter()
        first = len(latencies)
        chunk = [contents[(first + i) % len(contents)] for i in range(batch)]
        images = [photos.to_fashion_mnist(photos.read_photo(io.BytesIO(c))) for c in chunk]
        runtime(np.stack(images)[:, None])
        latencies += [time.perf_counter() - t0] * batch
    return len(latencies) / (time.perf_counter() - start), latencies


def over_http(url: str, files: list[Path], concurrency: int, seconds: float):
    """`concurrency` clients posting photos until the time or request bound. Requests/s, latencies."""
    contents = [(f.name, f.read_bytes()) for f in files]
    deadline = time.perf_counter() + seconds
    per_client = MAX_REQUESTS // concurrency

    def client(offset: int) -> list[float]:
        latencies = []
        with httpx2.Client(base_url=url, timeout=30) as http:
            while time.perf_counter() < deadline and len(latencies) < per_client:
                name, data = contents[(offset + len(latencies)) % len(contents)]
                t0 = time.perf_counter()
                answer = http.post("/predict", files={"file": (name, data)})
                answer.raise_for_status()
                latencies.append(time.perf_counter() - t0)
        return latencies

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = [t for part in pool.map(client, range(concurrency)) for t in part]
    return len(latencies) / (time.perf_counter() - start), latencies


def start_server(
    model: ModelFile, serve_options: list[str], log: Path
) -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "fashion_lightning", "serve", f"{model.option}={model.path}"]
    command += [f"--port={port}", *serve_options]
    with log.open("w") as out:
        server = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
    while time.monotonic() < deadline and server.poll() is None:
        try:
            if httpx2.get(f"{url}/health", timeout=2).status_code == 200:
                return server, url
        except httpx2.TransportError:
            pass
        time.sleep(0.25)
    stop_server(server)
    raise SystemExit(f"serve did not become healthy:\n{log.read_text()}")


def stop_server(server: subprocess.Popen) -> None:
    """Ctrl+C, as a person stops it; SIGKILL to its process group if it hangs."""
    os.killpg(server.pid, signal.SIGINT)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)


def row(name: str, rate: float, latencies: list[float], baseline: float) -> str:
    p50, p95 = np.percentile(np.array(latencies) * 1000, [50, 95])
    return f"| {name} | {len(latencies)} | {rate:.1f} | {p50:.1f} | {p95:.1f} | {rate / baseline:.2f}x |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt_path", help="a checkpoint (default: the shipped CNN, one step)")
    parser.add_argument("--model", help="instead of --ckpt_path: an exported ONNX file")
    parser.add_argument("--workers", type=int, help="serve --workers (default: serve's own)")
    parser.add_argument("--max_batch_size", type=int, default=16, help="serve --max_batch_size")
    parser.add_argument("--batch_timeout", type=float, default=DEFAULT_BATCH_TIMEOUT)
    parser.add_argument("--seconds", type=float, default=6.0, help="time bound of each phase")
    args = parser.parse_args()
    serve_options = [
        f"--{name}={getattr(args, name)}"
        for name in ("workers", "max_batch_size", "batch_timeout")
        if getattr(args, name) is not None
    ]
    with tempfile.TemporaryDirectory() as folder:
        files = product_photos(Path(folder))
        model = model_file(args, Path(folder))
        print(
            f"CPU: {describe(read_cpu())}; {os.cpu_count()} cores; {model.option} {model.path}; "
            f"one thread per worker and in the baseline; serve {' '.join(serve_options)}"
        )
        baseline = in_process(model, files, args.seconds / 2, batch=1)
        batched = in_process(model, files, args.seconds / 2, batch=args.max_batch_size)
        server, url = start_server(model, serve_options, Path(folder) / "server.log")
        try:
            over_http(url, files, 1, 1.0)  # warm-up: the first requests pay for lazy imports
            phases = {c: over_http(url, files, c, args.seconds) for c in CLIENTS}
        finally:
            stop_server(server)
    print("\n| requests | count | requests/s | p50 ms | p95 ms | vs in-process one at a time |")
    print("|---|---:|---:|---:|---:|---:|")
    print(row("in process, no HTTP, one at a time (baseline)", *baseline, baseline[0]))
    print(row(f"in process, no HTTP, {args.max_batch_size} at a time", *batched, baseline[0]))
    for clients, (rate, latencies) in phases.items():
        name = f"HTTP, {clients} client{'s' if clients > 1 else ''} back to back"
        print(row(name, rate, latencies, baseline[0]))
    print(f"\n{CLIENTS[-1]} clients vs 1: {phases[CLIENTS[-1]][0] / phases[1][0]:.2f}x requests/s")


def model_file(args: argparse.Namespace, folder: Path) -> ModelFile:
    """The model to serve: --model, --ckpt_path, or the shipped CNN after one step."""
    if args.model:
        return ModelFile(str(Path(args.model).resolve()), "onnx")
    ckpt_path = args.ckpt_path and str(Path(args.ckpt_path).resolve())
    return ModelFile(ckpt_path or one_step_checkpoint(folder), "checkpoint")


if __name__ == "__main__":
    main()
