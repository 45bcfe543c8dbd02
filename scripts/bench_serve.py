"""Benchmark: `python -m fashion_lightning serve` answering photos over HTTP, on this machine.

A real server (the command itself, on a free port of 127.0.0.1) gets product-style JPEG photos of
real test images (a dark garment on an off-white canvas, 224x224 in 400x330, about 10 kB) as
`POST /predict` uploads, one at a time and then 8 at a time, each phase bounded in requests and
seconds. It prints requests/s and the latency percentiles (p50, p95) of each phase beside the
baseline: the same work in one process without HTTP (photos.py's preprocessing and the model's
forward pass, one photo at a time), so the ratio is what the HTTP server and LitServe's queues
cost. The client shares the CPU with the server: on 2 cores both count.

    python scripts/bench_serve.py [--ckpt_path CKPT] [--workers 1] [--seconds 6]

Without --ckpt_path it times the default recipe's network (the shipped CNN) from a one-step fit:
speed does not depend on the weights.
"""

import argparse
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
import torch
from bench_time_to_accuracy import cpu_description
from PIL import Image

from fashion_lightning import idx, photos
from fashion_lightning.checkpoint import load_model
from fashion_lightning.inference import ProbabilityModel
from fashion_lightning.lightning_cli import make_cli

N_PHOTOS = 50
MAX_REQUESTS = 2000  # per phase, beside its time bound


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
    cli = make_cli(["fit", "--trainer.max_steps=1", "--trainer.limit_val_batches=1",
                    "--trainer.limit_test_batches=0", "--trainer.enable_progress_bar=false"])  # fmt: skip
    return str(Path(cli.trainer.checkpoint_callback.last_model_path).resolve())


def in_process(ckpt_path: str, files: list[Path], seconds: float) -> tuple[float, list[float]]:
    """The baseline: preprocessing and forward pass per photo, no HTTP. Requests/s, latencies."""
    model = ProbabilityModel(load_model(ckpt_path))
    latencies, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds and len(latencies) < MAX_REQUESTS:
        t0 = time.perf_counter()
        image = photos.to_fashion_mnist(photos.read_photo(files[len(latencies) % len(files)]))
        with torch.inference_mode():
            model(torch.from_numpy(image)[None, None])
        latencies.append(time.perf_counter() - t0)
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


def start_server(ckpt_path: str, workers: int, log: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "fashion_lightning", "serve", f"--ckpt_path={ckpt_path}",
               f"--port={port}", f"--workers={workers}"]  # fmt: skip
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
    parser.add_argument("--workers", type=int, default=1, help="serve --workers")
    parser.add_argument("--seconds", type=float, default=6.0, help="time bound of each phase")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        files = product_photos(Path(folder))
        ckpt_path = args.ckpt_path and str(Path(args.ckpt_path).resolve())
        ckpt_path = ckpt_path or one_step_checkpoint(Path(folder))
        print(f"CPU: {cpu_description()}; {os.cpu_count()} cores; torch threads "
              f"{torch.get_num_threads()}; serve --workers {args.workers}")  # fmt: skip
        base_rate, base_latencies = in_process(ckpt_path, files, args.seconds / 2)
        server, url = start_server(ckpt_path, args.workers, Path(folder) / "server.log")
        try:
            over_http(url, files, 1, 1.0)  # warm-up: the first requests pay for lazy imports
            phases = {c: over_http(url, files, c, args.seconds) for c in (1, 8)}
        finally:
            stop_server(server)
    print("\n| requests | count | requests/s | p50 ms | p95 ms | vs in-process |")
    print("|---|---:|---:|---:|---:|---:|")
    print(row("in process, no HTTP (baseline)", base_rate, base_latencies, base_rate))
    for concurrency, (rate, latencies) in phases.items():
        print(row(f"HTTP, {concurrency} at a time", rate, latencies, base_rate))


if __name__ == "__main__":
    main()
