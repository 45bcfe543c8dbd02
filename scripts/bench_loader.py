"""Benchmark: one epoch of training batches from our DataModule vs the usual torchvision pipeline.

Baseline: torchvision `FashionMNIST` + `ToTensor` + `Normalize` + `DataLoader(batch_size=256,
shuffle=True)` on the same files (decompressed into a temporary folder in torchvision's layout).
Ours: `FashionMNISTDataModule.train_dataloader()` with each batch normalized by the DataModule's own
`transform` (the work `on_after_batch_transfer` does in training), without and with the CNN's
augmentation (random crop by 2 pixels, horizontal flip). All on CPU, in one process, one after
the other; the best of three epochs each.

    python scripts/bench_loader.py
"""

import gzip
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from fashion_lightning.data import idx
from fashion_lightning.data.datamodule import FashionMNISTDataModule

BATCH = 256


def best_epoch_seconds(epoch: Callable[[], None], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        epoch()
        times.append(time.perf_counter() - start)
    return min(times)


def torchvision_epoch(root: Path) -> Callable[[], None]:
    normalize = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((idx.PIXEL_MEAN,), (idx.PIXEL_STD,))]
    )
    dataset = datasets.FashionMNIST(str(root), train=True, transform=normalize)
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=True)
    return lambda: [None for _ in loader]


def datamodule_epoch(augment: bool) -> Callable[[], None]:
    dm = FashionMNISTDataModule(batch_size=BATCH, random_crop=2, horizontal_flip=True)
    dm.setup("fit")
    loader = dm.train_dataloader()
    return lambda: [dm.transform(x, augment=augment) for x, _ in loader]


def torchvision_layout(source: Path, root: Path) -> Path:
    """Decompress the four files where torchvision expects them (it skips its md5 check then)."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in (n for pair in idx.FILES.values() for n in pair):
        path = source / f"{name}.gz"
        data = gzip.decompress(path.read_bytes()) if path.exists() else (source / name).read_bytes()
        (raw / name).write_bytes(data)
    return root


def main() -> None:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = torchvision_layout(idx.find_data_dir(download=False), Path(tmp))
        baseline = best_epoch_seconds(torchvision_epoch(root))
    rows = {
        "torchvision FashionMNIST + ToTensor + DataLoader": baseline,
        "DataModule, normalized": best_epoch_seconds(datamodule_epoch(augment=False)),
        "DataModule, normalized + crop + flip": best_epoch_seconds(datamodule_epoch(augment=True)),
    }
    print(
        f"One epoch of training batches (batch {BATCH}), best of 3, "
        f"{torch.get_num_threads()} threads"
    )
    print(f"| {'loader':<50} | seconds | speed-up vs torchvision |")
    print(f"|{'-' * 52}|---------|-------------------------|")
    for name, seconds in rows.items():
        print(f"| {name:<50} | {seconds:7.3f} | {baseline / seconds:22.0f}x |")


if __name__ == "__main__":
    main()
