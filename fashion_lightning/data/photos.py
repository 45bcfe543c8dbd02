"""Your own photos as Fashion-MNIST images: the one place that knows how a photo becomes 28x28.

The steps are those Zalando used to turn its product photos into the data set (Xiao et al. 2017,
arXiv:1708.07747, section 2): trim the edges close to the colour of the corner pixels, resize the
longest edge to 28, sharpen, extend the shortest edge to 28 with the image centred, negate, and
convert to 8-bit grayscale. Zalando resized by skipping pixels of 51x73 thumbnails; photos are
far larger, so the resize here is Lanczos (it averages instead of aliasing). Two additions make
ordinary photos work: transparency is composited on white, and the negation maps the photo's own
background (an off-white, say) to black, as in the data set. A photo whose background is dark (a
light object, as Fashion-MNIST stores it) is not negated.
"""

import glob
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from fashion_lightning.errors import FashionLightningError

SIZE = 28
SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"}
# Zalando's trimming threshold: 5% of the largest distance between two colours in RGB.
TRIM_DISTANCE = 0.05 * 255 * math.sqrt(3)
# Photos are shrunk to this before trimming: plenty for a 28-pixel result, and bounded memory.
WORKING_SIZE = 512
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601, as PIL's convert("L")


class PhotoError(Exception):
    """A file that cannot be used as a photo; its message goes into the `error` column."""


@dataclass
class Photos:
    """The files found, their 28x28 images (zeros where the file failed) and why each failed."""

    files: list[str]
    images: np.ndarray  # (N, 28, 28) uint8, light object on black as in Fashion-MNIST
    errors: list[str] = field(default_factory=list)  # "" for a usable file


def find_photos(path: str) -> list[Path]:
    """The files `path` names: a file, a folder (its image files, recursively, sorted) or a glob."""
    where = Path(path).expanduser()
    if where.is_dir():
        found = (p for p in where.rglob("*") if p.suffix.lower() in SUFFIXES)
        files = sorted(p for p in found if p.is_file() and not p.name.startswith("."))
        if not files:
            raise FashionLightningError(
                f"--data.predict_path {path} holds no image files (searched recursively for "
                f"{', '.join(sorted(SUFFIXES))}). Convert the photos to one of these formats."
            )
        return files
    if where.exists():
        return [where]
    matches = sorted(Path(p) for p in glob.glob(str(where), recursive=True))
    files = [p for p in matches if p.is_file()]
    if not files:
        raise FashionLightningError(
            f"--data.predict_path {path} is not a file, a folder or a glob that matches files. "
            f"Name an image (PNG, JPEG, WebP, BMP, GIF), a folder of them, or a pattern such as "
            f"'photos/*.jpg' (quoted, so the shell leaves it to us)."
        )
    return files


def load_photos(path: str) -> Photos:
    """Every file `path` names as a 28x28 image, or the reason it could not be one."""
    files = find_photos(path)
    images = np.zeros((len(files), SIZE, SIZE), dtype=np.uint8)
    errors = [""] * len(files)
    for i, file in enumerate(files):
        try:
            images[i] = to_fashion_mnist(read_photo(file))
        except PhotoError as e:
            errors[i] = str(e)
    return Photos([str(f) for f in files], images, errors)


def read_photo(path: str | Path | BinaryIO, working_size: int = WORKING_SIZE) -> Image.Image:
    """The first frame of an image file (a path, or an open binary file such as an upload) as
    RGB, transparency composited on white, upright (EXIF orientation applied) and no larger than
    `working_size` on its longest edge."""
    try:
        with Image.open(path) as image:
            image.draft("RGB", (working_size, working_size))  # JPEG: decode at reduced scale
            image = ImageOps.exif_transpose(image)  # loads the first frame
            rgba = image.convert("RGBA")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise PhotoError(describe_failure(path, e)) from None
    rgba.thumbnail((working_size, working_size), Image.Resampling.LANCZOS)
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def describe_failure(path: str | Path | BinaryIO, error: Exception) -> str:
    """Why a file could not be read, in words for the `error` column."""
    if isinstance(error, PermissionError):
        return "cannot be read (permission denied)"
    if isinstance(path, str | Path) and Path(path).is_file() and Path(path).stat().st_size == 0:
        return "empty file"
    if isinstance(error, Image.UnidentifiedImageError):
        return "not an image PIL can read (PNG, JPEG, WebP, BMP, GIF)"
    return f"broken image ({' '.join(str(error).split()) or type(error).__name__})"


def to_fashion_mnist(photo: Image.Image) -> np.ndarray:
    """An RGB photo -> (28, 28) uint8, light object on black: Zalando's steps."""
    background = corner_colour(photo)
    trimmed = photo.crop(object_box(photo, background))
    scale = SIZE / max(trimmed.size)
    size = tuple(max(1, round(side * scale)) for side in trimmed.size)
    small = trimmed.resize(size, Image.Resampling.LANCZOS)
    small = small.filter(ImageFilter.UnsharpMask(radius=1, percent=100, threshold=0))
    canvas = Image.new("RGB", (SIZE, SIZE), tuple(int(c) for c in background))
    canvas.paste(small, ((SIZE - size[0]) // 2, (SIZE - size[1]) // 2))
    return negate(canvas, background)


def corner_colour(photo: Image.Image) -> np.ndarray:
    """The background colour: the median of the four corner pixels (robust to one odd corner)."""
    w, h = photo.size
    corners = [photo.getpixel(xy) for xy in ((0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1))]
    return np.median(np.array(corners, dtype=np.float32), axis=0)


def object_box(photo: Image.Image, background: np.ndarray) -> tuple[int, int, int, int]:
    """The smallest box holding every pixel farther than 5% from the background colour."""
    pixels = np.asarray(photo, dtype=np.float32)  # (H, W, 3)
    far = np.linalg.norm(pixels - background, axis=-1) > TRIM_DISTANCE  # (H, W)
    rows, cols = np.flatnonzero(far.any(axis=1)), np.flatnonzero(far.any(axis=0))
    if not len(rows):
        raise PhotoError("the image is one uniform colour: there is no object to classify")
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def negate(canvas: Image.Image, background: np.ndarray) -> np.ndarray:
    """8-bit grayscale with the background at 0 and the object bright, as in Fashion-MNIST: a
    light background is negated, a dark one kept; either way stretched so it maps to black."""
    gray = np.asarray(canvas.convert("L"), dtype=np.float32)
    level = float(background @ LUMA)
    # Light background (a dark object): negate. Dark background (a light object): keep.
    span = level if level >= 128 else level - 255
    out = (level - gray) * 255 / span
    return np.clip(np.round(out), 0, 255).astype(np.uint8)
