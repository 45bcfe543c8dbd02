"""How well a checkpoint classifies product-style photos made from the test set, relative to the
same images as the data set stores them.

Each test image becomes what a shop's product photo looks like: a dark object on an off-white
canvas several times larger, with uneven margins, in RGB, saved as JPEG. The photos go through
`fashion_lightning.data.photos` (what `predict --data.predict_path` does) and the model classifies both
versions. The README's target: photo accuracy >= 0.85x data-set accuracy.

    python scripts/photo_accuracy.py --ckpt_path lightning_logs/version_0/checkpoints/last.ckpt
"""

import argparse
import io
import json
import sys

import numpy as np
import torch
from PIL import Image

from fashion_lightning.data import idx, photos
from fashion_lightning.data.datamodule import normalize
from fashion_lightning.training.checkpoint import load_model


def product_photo(image: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A (28, 28) light-on-black image as a JPEG product photo: upscaled 4-10x, dark on an
    off-white canvas 1.5-4x larger than the object, placed off centre."""
    scale = int(rng.integers(4, 11))
    size = 28 * scale
    big = Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC)
    ink = np.asarray(big, dtype=np.float32)[..., None] / 255  # (S, S, 1), 1 where the object is
    canvas_colour = rng.uniform(232, 252, size=3).astype(np.float32)
    object_rgb = canvas_colour * (1 - ink)  # dark object, same hue as the canvas where faint
    width, height = (int(size * rng.uniform(1.5, 4)) for _ in range(2))
    canvas = np.empty((height, width, 3), dtype=np.float32)
    canvas[:] = canvas_colour
    top, left = int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))
    canvas[top : top + size, left : left + size] = object_rgb
    buffer = io.BytesIO()
    Image.fromarray(canvas.round().astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return Image.open(io.BytesIO(buffer.getvalue()))


@torch.no_grad()
def accuracy(ckpt_path: str, images: np.ndarray, labels: np.ndarray) -> float:
    """The checkpoint's accuracy on (N, 28, 28) uint8 images."""
    model = load_model(ckpt_path)
    x = normalize(torch.from_numpy(images).unsqueeze(1))
    preds = torch.cat([model(batch).argmax(dim=-1) for batch in x.split(1000)])
    return float((preds.numpy() == labels).mean())


def measure(ckpt_path: str, n: int = 2000, seed: int = 0) -> dict[str, float]:
    """Accuracy on `n` test images as stored and as product photos, and their ratio."""
    images, labels = idx.load_split(idx.find_data_dir(download=False), "test")
    images, labels = images[:n], labels[:n]
    rng = np.random.default_rng(seed)
    seen = np.stack(
        [photos.to_fashion_mnist(product_photo(im, rng).convert("RGB")) for im in images]
    )
    stored, photo = accuracy(ckpt_path, images, labels), accuracy(ckpt_path, seen, labels)
    return {"images": n, "stored_acc": stored, "photo_acc": photo, "ratio": photo / stored}


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt_path", required=True)
    parser.add_argument("--n", type=int, default=2000, help="test images to use (default 2000)")
    result = measure(**vars(parser.parse_args(argv)))
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    sys.exit(0 if main()["ratio"] >= 0.85 else 1)
