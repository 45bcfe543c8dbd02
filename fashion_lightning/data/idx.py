"""Fashion-MNIST on disk: find the four IDX files, read and validate them, with NumPy only.

This is the project's one way in for data. It imports no torch, so the NumPy reference network
(`reference/`) shares it with the Lightning DataModule (`datamodule.py`).

The IDX format (http://yann.lecun.com/exdb/mnist/) is a 4-byte magic number `0x00 0x00 <dtype>
<ndim>`, then `ndim` big-endian uint32 dimensions, then the raw values in C order.
"""

from __future__ import annotations

import gzip
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np

from fashion_lightning.errors import FashionLightningError, paragraph

CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
NUM_CLASSES = len(CLASS_NAMES)
IMAGE_SIZE = 28

# Mean and standard deviation of all 60,000 training pixels scaled to [0, 1]; fixed constants rather
# than statistics of each run's split, so a checkpoint always sees the inputs it was trained on.
PIXEL_MEAN = 0.2860
PIXEL_STD = 0.3530

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
ENV_VAR = "FASHION_MNIST_DIR"
# Searched in this order when the user names no folder; the download goes into DOWNLOAD_ROOT.
SEARCH_PATHS = [Path("/usr/share/datasets/fashion-mnist"), Path("data/FashionMNIST/raw")]
DOWNLOAD_ROOT = Path("data")

_UBYTE = 0x08  # IDX type code for unsigned bytes, the only type Fashion-MNIST uses

HOW_TO_GET = (
    "Get the files in one of two ways: on Debian or Ubuntu run `sudo apt-get install "
    "dataset-fashion-mnist` (it installs them in /usr/share/datasets/fashion-mnist); or, on a machine "
    "with internet access, run `python -c \"import torchvision; torchvision.datasets.FashionMNIST('data', "
    'download=True)"` and copy the resulting data/FashionMNIST/raw folder here, or point '
    f"{ENV_VAR} (or --data.data_dir) at any folder holding the four files."
)


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (gzip-compressed if its name ends in `.gz`) into a uint8 array."""
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != _UBYTE:
        magic = data[:4].hex() if len(data) >= 4 else f"only {len(data)} bytes"
        raise FashionLightningError(
            f"{path} is not an IDX file of unsigned bytes: its magic number is {magic}, expected "
            f"00000801 (labels) or 00000803 (images). Check that the file is the Fashion-MNIST file "
            f"it is named after, not an HTML error page or a file of another format. {HOW_TO_GET}"
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise FashionLightningError(f"{path} is truncated inside its header. {HOW_TO_GET}")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + int(np.prod(shape, dtype=np.int64))
    if len(data) != expected:
        raise FashionLightningError(
            f"{path} holds {len(data)} bytes but its header promises {expected} for an array of shape "
            f"{shape}: the file is truncated or corrupt. Delete it and fetch it again. {HOW_TO_GET}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _read_bytes(path: Path) -> bytearray:
    """Whole file contents, decompressed if gzipped; a writable buffer so torch can share it."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return bytearray(f.read())
        return bytearray(path.read_bytes())
    except (OSError, EOFError, zlib.error) as e:
        raise FashionLightningError(
            f"Cannot read {path}: {e}. The file is missing, unreadable, truncated or not valid gzip. "
            f"Delete it and fetch it again. {HOW_TO_GET}"
        ) from None


def load_split(folder: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) and labels (N,), both uint8, of the `train` or `test` split in `folder`."""
    image_file, label_file = (find_file(Path(folder), name) for name in FILES[split])
    images, labels = read_idx(image_file), read_idx(label_file)
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise FashionLightningError(
            f"{image_file} holds an array of shape {images.shape}, expected (N, 28, 28) images. "
            f"Is it a label file under an image file's name? {HOW_TO_GET}"
        )
    if labels.ndim != 1 or len(labels) != len(images):
        raise FashionLightningError(
            f"{image_file} holds {len(images)} images but {label_file} holds labels of shape "
            f"{labels.shape}: the two files do not belong together. Replace both with one matching "
            f"pair. {HOW_TO_GET}"
        )
    if labels.size and labels.max() >= NUM_CLASSES:
        raise FashionLightningError(
            f"{label_file} holds the label {labels.max()}, but Fashion-MNIST labels run from 0 to "
            f"{NUM_CLASSES - 1}: the file is corrupt or from another data set. {HOW_TO_GET}"
        )
    return images, labels


def find_file(folder: Path, name: str) -> Path:
    """The IDX file `name` in `folder`, gzipped (`name.gz`) or not."""
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    raise FashionLightningError(f"{folder} has no {name}[.gz]. {HOW_TO_GET}")


def missing_files(folder: Path) -> list[str]:
    """Names of the four IDX files that `folder` lacks in either raw or `.gz` form."""
    names = [name for pair in FILES.values() for name in pair]
    return [n for n in names if not (folder / n).is_file() and not (folder / f"{n}.gz").is_file()]


def find_data_dir(data_dir: str | Path | None = None, download: bool = True) -> Path:
    """The folder holding the four files: `data_dir`, else $FASHION_MNIST_DIR, else the first of
    SEARCH_PATHS that has them, else a fresh torchvision download into DOWNLOAD_ROOT.

    A folder the user names (argument or environment variable) must hold the files: falling through
    to another copy would silently train on data the user did not ask for.
    """
    named = (str(data_dir), "the data_dir option") if data_dir else None
    if named is None and os.environ.get(ENV_VAR):
        named = (os.environ[ENV_VAR], f"the {ENV_VAR} environment variable")
    if named is not None:
        folder, source = Path(named[0]), named[1]
        missing = missing_files(folder)
        if missing:
            state = "does not exist" if not folder.is_dir() else f"lacks {', '.join(missing)}"
            raise FashionLightningError(
                f"The data folder {folder}, named by {source}, {state}. Point it at a folder that "
                f"holds the four Fashion-MNIST IDX files (.gz or uncompressed). {HOW_TO_GET}"
            )
        return folder
    for folder in SEARCH_PATHS:
        if not missing_files(folder):
            return folder
    if download:
        folder = _download()
        if folder is not None:
            return folder
    looked = ", ".join(str(p) for p in SEARCH_PATHS)
    tried = f"; the download into {DOWNLOAD_ROOT}/ failed (no network?)" if download else ""
    raise FashionLightningError(
        f"Fashion-MNIST was not found. Looked in: the data_dir option (not set), {ENV_VAR} (not set), "
        f"{looked}{tried}. {HOW_TO_GET}"
    )


def _download() -> Path | None:
    """Download with torchvision into DOWNLOAD_ROOT; None when that fails (e.g. no network)."""
    from torchvision.datasets import FashionMNIST  # imported here: the rest of this module is NumPy

    created = next(
        (p for p in (DOWNLOAD_ROOT, DOWNLOAD_ROOT / "FashionMNIST") if not p.exists()), None
    )
    try:
        FashionMNIST(str(DOWNLOAD_ROOT), train=True, download=True)
        FashionMNIST(str(DOWNLOAD_ROOT), train=False, download=True)
    except Exception:  # noqa: BLE001 - any failure means "no copy from the internet"
        if created is not None:  # leave no half-downloaded folder behind
            shutil.rmtree(created, ignore_errors=True)
        return None
    return DOWNLOAD_ROOT / "FashionMNIST" / "raw"


if __name__ == "__main__":  # `python -m fashion_lightning.data.idx`: find (or download) the files
    import sys

    try:
        print(find_data_dir())
    except FashionLightningError as error:
        sys.exit(paragraph(str(error)))
