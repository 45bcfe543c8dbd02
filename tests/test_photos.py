"""Your photos as 28x28 images: known images made into product-style photos come back, and files
that cannot be used become error rows, never a crash."""

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fashion_lightning.data import photos
from fashion_lightning.errors import FashionLightningError

CANVAS = (248, 246, 240)  # off-white


def known_image() -> np.ndarray:
    """A 28x28 light-on-black garment-like shape (a textured trapezoid) touching the top and
    bottom edges, as Fashion-MNIST's images touch their longest edge."""
    rows, cols = np.mgrid[0:28, 0:28]
    half_width = 6 + rows * 0.25  # (28, 28): wider towards the bottom
    inside = np.abs(cols - 13.5) <= half_width
    texture = 120 + 4 * rows - 60 * (np.abs(cols - 13.5) < 2)  # shading and a dark placket
    return np.where(inside, texture, 0).astype(np.uint8)


def product_photo(image: np.ndarray, kind: str) -> Image.Image:
    """`image` upscaled 8x, dark on an off-white canvas with uneven margins, in the mode `kind`
    names ("rgba": transparent around the object instead of a canvas)."""
    ink = np.asarray(Image.fromarray(image).resize((224, 224), Image.Resampling.BICUBIC))
    ink = ink.astype(np.float32)[..., None] / 255  # (224, 224, 1)
    canvas = np.empty((400, 330, 3), dtype=np.float32)
    canvas[:] = CANVAS
    canvas[37:261, 90:314] = np.array(CANVAS) * (1 - ink)  # margins: 37/139 rows, 90/16 cols
    photo = Image.fromarray(canvas.round().astype(np.uint8))
    if kind == "rgba":  # the canvas transparent, the object opaque
        alpha = np.zeros((400, 330), dtype=np.uint8)
        alpha[37:261, 90:314] = np.where(ink[..., 0] > 0.02, 255, 0)
        photo.putalpha(Image.fromarray(alpha))
    if kind == "palette":
        return photo.convert("P", palette=Image.Palette.ADAPTIVE)
    return photo.convert("L") if kind == "gray" else photo


@pytest.mark.parametrize(
    ("kind", "suffix"),
    [
        ("rgb", ".jpg"),
        ("rgb", ".png"),
        ("rgb", ".webp"),
        ("rgb", ".bmp"),
        ("rgba", ".png"),
        ("gray", ".png"),
        ("palette", ".gif"),
    ],
)
def test_a_product_photo_comes_back_close_to_the_original(kind, suffix, tmp_path: Path) -> None:
    original = known_image()
    path = tmp_path / f"photo{suffix}"
    product_photo(original, kind).save(path, **({"quality": 90} if suffix == ".jpg" else {}))
    found = photos.load_photos(str(path))
    assert found.errors == [""] and found.files == [str(path)]
    seen = found.images[0].astype(np.float32)
    assert np.abs(seen - original).mean() < 20  # of 255: resampling, sharpening, JPEG
    assert np.corrcoef(seen.ravel(), original.ravel())[0, 1] > 0.9
    assert seen[original == 0].mean() < 15  # the background black, the object in place


def test_a_fashion_mnist_image_is_kept_as_it_is(tmp_path: Path) -> None:
    Image.fromarray(known_image()).save(tmp_path / "stored.png")  # light on black already
    seen = photos.load_photos(str(tmp_path / "stored.png")).images[0].astype(np.float32)
    assert np.corrcoef(seen.ravel(), known_image().ravel())[0, 1] > 0.95


def test_folders_are_searched_recursively_in_order_and_globs_match(tmp_path: Path) -> None:
    for name in ("b/z.png", "a.JPG", "b/c/y.webp", "notes.txt", ".hidden.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        product_photo(known_image(), "rgb").save(tmp_path / name, format="PNG")
    assert [
        Path(f).relative_to(tmp_path).as_posix() for f in photos.load_photos(str(tmp_path)).files
    ] == ["a.JPG", "b/c/y.webp", "b/z.png"]
    assert len(photos.find_photos(str(tmp_path / "**" / "*.png"))) == 1  # glob skips .hidden.png


def write_unusable(folder: Path) -> dict[str, str]:
    """Files that cannot be photos, each with words its error must hold."""
    good = folder / "good.png"
    product_photo(known_image(), "rgb").save(good)
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.jpg").write_text("not an image")
    (folder / "broken.png").write_bytes(good.read_bytes()[:200])
    Image.new("RGB", (50, 40), CANVAS).save(folder / "blank.png")
    expected = {
        "empty.png": "empty",
        "notes.jpg": "not an image",
        "broken.png": "broken",
        "blank.png": "uniform",
    }
    if os.geteuid() != 0:  # root reads every file
        (folder / "locked.png").write_bytes(good.read_bytes())
        (folder / "locked.png").chmod(0)
        expected["locked.png"] = "permission"
    return expected


def test_unusable_files_become_error_rows(tmp_path: Path) -> None:
    expected = write_unusable(tmp_path)
    found = photos.load_photos(str(tmp_path))
    errors = {Path(f).name: e for f, e in zip(found.files, found.errors)}
    assert errors.pop("good.png") == ""
    assert errors.keys() == expected.keys()
    for name, words in expected.items():
        assert words in errors[name], errors[name]


def test_a_path_that_names_nothing_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FashionLightningError, match="--data.predict_path"):
        photos.load_photos(str(tmp_path / "*.jpg"))
    (tmp_path / "photo.heic").write_bytes(b"not ours")
    with pytest.raises(FashionLightningError, match="holds no image files"):
        photos.load_photos(str(tmp_path))  # a folder of other formats: said, not silent
