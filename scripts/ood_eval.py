"""How well `ood_score` tells clothing from everything else, measured the way a user meets it.

    python scripts/ood_eval.py --ckpt_path lightning_logs/version_0/checkpoints/last.ckpt

Builds four folders of image files at run time from libraries' bundled data (nothing downloaded,
nothing committed), with fixed seeds, and runs `predict --data.predict_path` on each:

- `fashion/`: 500 Fashion-MNIST test images as PNG;
- `digits/`: 500 of scikit-learn's 8x8 digits made MNIST-like (scaled to 20x20, centred on a
  black 28x28 canvas) as PNG: the offline stand-in for MNIST;
- `photos/`: scikit-image's bundled sample images (a cat, an astronaut, coffee, coins, ...),
  whole and as random crops;
- `products/`: product-style photos of 200 test garments: the garment dark on an off-white
  canvas several times larger, uneven margins, JPEG.

Prints the AUROC of `ood_score` between fashion/ and digits/, and the share of photos/ and
products/ flagged `not clothing`. Then compares, on the same 28x28 images, the three candidate
scores (the max calibrated softmax, the energy score that ships, and the Mahalanobis distance of
the penultimate features fitted on 10,000 training images) and the pair of energy and Mahalanobis
that ships, each thresholded on the validation split at 5%, 2% and 1%, with self-made
out-of-domain images (noise, shapes) beside them.
Needs the `ood` extra: pip install -e '.[ood]'.
"""

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageDraw
from sklearn.datasets import load_digits
from sklearn.metrics import roc_auc_score

from fashion_lightning.cli.main import cli_main
from fashion_lightning.data import idx, photos
from fashion_lightning.data.datamodule import FashionMNISTDataModule, normalize
from fashion_lightning.evaluation.ood import (
    FLAG_RATE,
    EnergyMahalanobisScore,
    MahalanobisScore,
    energy,
)
from fashion_lightning.evaluation.trust import TrustedClassifier, trust_of
from fashion_lightning.training.callbacks import PredictionWriter
from fashion_lightning.training.checkpoint import Checkpoint, load_model

SEED = 0
N_PAIRS = 500  # Fashion-MNIST and digit images for the AUROC
N_PRODUCTS = 200
CROPS_PER_PHOTO = 4
# scikit-image's sample images that ship inside the package (the others need a download).
SAMPLES = [
    "astronaut",
    "brick",
    "camera",
    "cat",
    "chelsea",
    "clock",
    "coffee",
    "coins",
    "colorwheel",
    "grass",
    "gravel",
    "horse",
    "hubble_deep_field",
    "immunohistochemistry",
    "logo",
    "moon",
    "page",
    "retina",
    "rocket",
    "text",
    "binary_blobs",
    "checkerboard",
    "shepp_logan_phantom",
]


def fashion_images(test: tuple[np.ndarray, np.ndarray], folder: Path) -> None:
    rng = np.random.default_rng(SEED)
    for i in rng.choice(len(test[0]), N_PAIRS, replace=False):
        Image.fromarray(test[0][i]).save(folder / f"fashion_{i:05d}.png")


def digit_images(folder: Path) -> None:
    """scikit-learn's digits (0..16) -> 0..255, 20x20 bicubic, centred on black 28x28."""
    digits = load_digits().images
    rng = np.random.default_rng(SEED)
    for i in rng.choice(len(digits), N_PAIRS, replace=False):
        small = Image.fromarray((digits[i] * 255 / 16).astype(np.uint8))
        canvas = Image.new("L", (28, 28))
        canvas.paste(small.resize((20, 20), Image.BICUBIC), (4, 4))
        canvas.save(folder / f"digit_{i:04d}.png")


def photo_images(folder: Path) -> None:
    """Each bundled sample image whole, and CROPS_PER_PHOTO random crops of 25-60% of its side."""
    import skimage.data

    rng = np.random.default_rng(SEED)
    for name in SAMPLES:
        try:
            array = getattr(skimage.data, name)()
        except Exception:  # noqa: BLE001 - a sample this version does not bundle
            continue
        image = Image.fromarray(as_uint8(array))
        image.save(folder / f"{name}.png")
        w, h = image.size
        for k in range(CROPS_PER_PHOTO):
            side = int(min(w, h) * rng.uniform(0.25, 0.6))
            x, y = rng.integers(0, w - side + 1), rng.integers(0, h - side + 1)
            image.crop((x, y, x + side, y + side)).save(folder / f"{name}_crop{k}.png")


def as_uint8(array: np.ndarray) -> np.ndarray:
    """A sample image as uint8: booleans and floats in [0, 1] (the phantom) scaled to 0..255."""
    if array.dtype == bool or array.dtype.kind == "f":
        return (np.asarray(array, dtype=np.float64) * 255).round().clip(0, 255).astype(np.uint8)
    return np.asarray(array, dtype=np.uint8)


def product_images(test: tuple[np.ndarray, np.ndarray], folder: Path) -> None:
    """A test garment as a shop photo: dark on an off-white canvas 2-3x its size, placed with
    uneven margins, 6x upscaled, saved as JPEG."""
    rng = np.random.default_rng(SEED + 1)
    for i in rng.choice(len(test[0]), N_PRODUCTS, replace=False):
        garment = Image.fromarray(test[0][i]).resize((168, 168), Image.BICUBIC)
        ink = np.asarray(garment, dtype=np.float32)[..., None] / 255  # (H, W, 1) 1 = garment
        paper = np.array(rng.integers(225, 250, 3), dtype=np.float32)  # off-white, tinted
        cloth = np.array(rng.integers(20, 90, 3), dtype=np.float32)  # a dark colour
        photo = Image.fromarray((paper * (1 - ink) + cloth * ink).astype(np.uint8))
        w, h = (int(168 * rng.uniform(2, 3)) for _ in range(2))
        canvas = Image.new("RGB", (w, h), tuple(int(c) for c in paper))
        canvas.paste(photo, (int(rng.integers(0, w - 168)), int(rng.integers(0, h - 168))))
        canvas.save(folder / f"product_{i:05d}.jpg", quality=85)


def predict_folder(ckpt_path: str, folder: Path) -> pd.DataFrame:
    """`predict --data.predict_path folder`, as a user runs it; the predictions it wrote."""
    options = [f"--ckpt_path={ckpt_path}", f"--data.predict_path={folder}"]
    cli = cli_main(["predict", *options, "--trainer.enable_progress_bar=false"])
    written = next(c.written for c in cli.trainer.callbacks if isinstance(c, PredictionWriter))
    return pd.read_csv(written)


def self_made_ood(n: int = 500) -> np.ndarray:
    """Out-of-domain images made here (not the evaluation sets): uniform and Gaussian noise,
    and random rectangles, ellipses and lines, light on black as the data set stores images."""
    rng = np.random.default_rng(SEED + 2)
    images = [rng.integers(0, 256, (28, 28)), np.clip(rng.normal(60, 60, (28, 28)), 0, 255)]
    while len(images) < n:
        canvas = Image.new("L", (28, 28))
        draw = ImageDraw.Draw(canvas)
        for _ in range(rng.integers(1, 4)):
            (x0, x1), (y0, y1) = sorted(rng.integers(0, 28, 2)), sorted(rng.integers(0, 28, 2))
            box, fill = (int(x0), int(y0), int(x1), int(y1)), int(rng.integers(80, 256))
            shape = rng.integers(3)
            if shape == 0:
                draw.rectangle(box, fill=fill)
            elif shape == 1:
                draw.ellipse(box, fill=fill)
            else:
                draw.line(box, fill=fill, width=int(rng.integers(1, 4)))
        images.append(np.asarray(canvas))
        images.append(rng.integers(0, 256, (28, 28)) * (rng.random((28, 28)) < 0.1))
    return np.stack(images[:n]).astype(np.uint8)


@torch.inference_mode()
def outputs(trusted: TrustedClassifier, images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Penultimate features and logits of (N, 28, 28) uint8 images."""
    x = normalize(torch.from_numpy(images)[:, None])
    features, logits = zip(*(trusted.features_and_logits(batch) for batch in x.split(1000)))
    return torch.cat(features), torch.cat(logits).float()


def candidates(
    trusted: TrustedClassifier, mahalanobis: MahalanobisScore, outputs: tuple
) -> dict[str, np.ndarray]:
    """The candidate scores (higher = further from clothing) from features and logits: the
    three alone, and the checkpoint's own (the pair of energy and Mahalanobis that ships)."""
    features, logits = outputs
    z = logits / trusted.temperature
    scores = {
        "max softmax": -z.softmax(-1).max(-1).values.numpy(),
        "energy": energy(logits, trusted.temperature).numpy(),
        "mahalanobis": mahalanobis.distance(features).numpy(),
    }
    if isinstance(trusted.ood, EnergyMahalanobisScore):  # not in checkpoints fitted before it
        scores["energy + mahalanobis"] = trusted.ood(features, logits, trusted.temperature).numpy()
    return scores


def compare(ckpt_path: str, sets: dict, val: np.ndarray, train: tuple) -> pd.DataFrame:
    """Per candidate score and validation flag rate (FLAG_RATE and stricter ones): the AUROC
    against digits and the share of each set above the threshold that flags that rate of the
    validation split. The Mahalanobis statistics are fitted on `train` (images, labels)."""
    trusted = trust_of(load_model(ckpt_path)).eval()
    train_features, val_outputs = outputs(trusted, train[0])[0], outputs(trusted, val)
    mahalanobis = MahalanobisScore.fit(train_features, train[1], val_outputs[0], num_classes=10)
    val_scores = candidates(trusted, mahalanobis, val_outputs)
    by_set = {
        name: candidates(trusted, mahalanobis, outputs(trusted, x)) for name, x in sets.items()
    }
    rows = {}
    for score, on_val in val_scores.items():
        auroc = roc_auc_score(
            np.r_[np.zeros(N_PAIRS), np.ones(N_PAIRS)],
            np.r_[by_set["fashion"][score], by_set["digits"][score]],
        )
        for rate in (FLAG_RATE, 0.02, 0.01):
            threshold = np.quantile(on_val, 1 - rate)
            row = {"AUROC fashion/digits": auroc}
            row |= {f"flagged {name}": (s[score] > threshold).mean() for name, s in by_set.items()}
            rows[f"{score}, {rate:.0%} of val"] = row
    return pd.DataFrame(rows).T


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt_path", required=True)
    parser.add_argument("--out", help="keep the image folders here (default: a temporary one)")
    args = parser.parse_args()
    datamodule = FashionMNISTDataModule(**Checkpoint.read(args.ckpt_path).config["data"])
    datamodule.load()
    test = idx.load_split(idx.find_data_dir(download=False), "test")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out or tmp)
        root.mkdir(parents=True, exist_ok=True)
        # A copy outside its run folder: predict writes into ./lightning_logs/eval/ here, not
        # over the run's own predictions.csv.
        ckpt_path = str(shutil.copy(args.ckpt_path, root / "model.ckpt"))
        os.chdir(root)
        makers = {
            "fashion": lambda f: fashion_images(test, f),
            "digits": digit_images,
            "photos": photo_images,
            "products": lambda f: product_images(test, f),
        }
        tables = {}
        for name, make in makers.items():
            (root / name).mkdir(parents=True, exist_ok=True)
            make(root / name)
            tables[name] = predict_folder(ckpt_path, root / name)
        fashion, digits = tables["fashion"]["ood_score"], tables["digits"]["ood_score"]
        auroc = roc_auc_score(
            np.r_[np.zeros(len(fashion)), np.ones(len(digits))], np.r_[fashion, digits]
        )
        print(f"\nCheckpoint: {args.ckpt_path}")
        print(
            f"AUROC of ood_score, {len(fashion)} Fashion-MNIST vs {len(digits)} digits: {auroc:.4f}"
        )
        for name in ("photos", "products", "fashion", "digits"):
            usable = tables[name][tables[name]["error"].isna()]  # a file predict could not use
            flagged = (usable["verdict"] == "not clothing").mean()
            print(f"flagged not clothing, {name} ({len(usable)} usable files): {flagged:.1%}")
        sets = {name: photos.load_photos(str(root / name)).images for name in makers}
        sets["self-made"] = self_made_ood()
        val = datamodule.splits["val"][0][:, 0].numpy()
        train_images, train_labels = (t[:10_000] for t in datamodule.splits["train"])
        train = (train_images[:, 0].numpy(), train_labels)
        print("\nCandidate scores, thresholded on validation at", f"{FLAG_RATE:.0%} flagged:")
        print(compare(ckpt_path, sets, val, train).to_string(float_format="%.3f"))


if __name__ == "__main__":
    main()
