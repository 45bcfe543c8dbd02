"""The Lightning DataModule: Fashion-MNIST as uint8 tensors in memory, batched by indexing.

The whole data set is 55 MB of uint8, so it lives in memory and a batch is one index into it: an
epoch of batches is about 60x faster than a torchvision `DataLoader` that turns every image into a
PIL object and back (scripts/bench_loader.py). Conversion to float, normalization and augmentation
happen once per batch as tensor ops in `on_after_batch_transfer`, i.e. on the GPU when there is one
(airbench's recipe, KellerJordan/cifar10-airbench).
"""

import math
from collections.abc import Iterator
from typing import Literal

import lightning as L
import numpy as np
import torch
from torch import Tensor

from fashion_lightning.data import idx, photos
from fashion_lightning.data.photometric import photometric_jitter
from fashion_lightning.errors import FashionLightningError

# (images (B, 1, 28, 28) uint8, labels (B,) int64, the samples' indices in their split (B,))
Batch = tuple[Tensor, Tensor, Tensor]


class TensorBatches:
    """Batches `(images (B, 1, 28, 28) uint8, labels (B,) int64, indices (B,))` sliced from
    in-memory tensors; the indices say which samples of the split a batch holds, so whoever writes
    per-sample results (predictions.csv) needs nothing but the batch.

    Under DDP each rank takes every `world_size`-th sample of the (shuffled) order, so ranks never
    share a sample. Training shards are cut to equal length so every rank takes the same number of
    optimizer steps; evaluation shards keep every sample, so metrics count each one exactly once.

    Stateful, for exact resume: `state_dict()` says which pass is under way and how many of its
    batches were handed out; Lightning stores it in checkpoints and, after `load_state_dict()`, the
    next iterator yields the rest of that pass. `len()` stays the length of a whole pass, as
    Lightning counts a resumed epoch's batches from its own progress.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0  # passes begun; each pass gets a new, reproducible order
        self.position = 0  # batches handed out of the pass under way (pass `epoch - 1`)
        self._resume_at: int | None = None  # set by load_state_dict: the next pass continues

    def _shard_size(self) -> int:
        """Samples this rank visits per pass: equal on all ranks when training, else all of its own."""
        n = len(self.labels)
        return n // self.world_size if self.shuffle else len(range(self.rank, n, self.world_size))

    def sample_indices(self, epoch: int | None = None) -> Tensor:
        """Indices of the samples this rank visits in pass `epoch` (default: the coming one)."""
        n = len(self.labels)
        if not self.shuffle:
            return torch.arange(self.rank, n, self.world_size)
        epoch = self.epoch if epoch is None else epoch
        generator = torch.Generator().manual_seed(self.seed + epoch)
        order = torch.randperm(n, generator=generator)  # same order on every rank
        return order[self.rank :: self.world_size][: self._shard_size()]

    def __len__(self) -> int:
        return -(-self._shard_size() // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        # A generator: nothing changes until the first batch is asked for, since Lightning also
        # calls iter() just to check that the loader is iterable, and again after a restore.
        if self._resume_at is None:
            epoch, start = self.epoch, 0
            self.epoch += 1
        else:
            epoch, start = self.epoch - 1, self._resume_at
            self._resume_at = None
        self.position = start
        for batch in self.sample_indices(epoch).split(self.batch_size)[start:]:
            self.position += 1  # counted before the yield: the consumer holds this batch now
            yield self.images[batch], self.labels[batch], batch

    def state_dict(self) -> dict[str, int]:
        """Where the pass under way stands (plain ints, so checkpoints load with weights_only)."""
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from `state`: the next iterator yields the rest of the pass under way, or the
        next pass when that one was complete (a checkpoint written at the end of an epoch)."""
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        unfinished = self.epoch > 0 and self.position < len(self)
        self._resume_at = self.position if unfinished else None


class FashionMNISTDataModule(L.LightningDataModule):
    """Fashion-MNIST: 55k train / 5k validation (split by `seed`) from the official 60k, and the
    official 10k test set, which `predict` also uses unless given your own photos."""

    class_names = idx.CLASS_NAMES
    num_classes = idx.NUM_CLASSES

    def __init__(
        self,
        data_dir: str | None = None,
        batch_size: int = 256,
        eval_batch_size: int = 1000,
        val_size: int = 5000,
        seed: int = 0,
        random_crop: int = 0,
        horizontal_flip: bool | Literal["alternate"] = False,
        random_erasing: float = 0.0,
        photometric: float = 0.0,
        download: bool = True,
        predict_path: str | None = None,
    ) -> None:
        """
        Args:
            data_dir: Folder with the four IDX files (.gz or raw). When unset: $FASHION_MNIST_DIR,
                /usr/share/datasets/fashion-mnist, data/FashionMNIST/raw, then a download into data/.
            batch_size: Training batch size (per process under DDP).
            eval_batch_size: Batch size for validation, test and predict; larger is faster.
            val_size: Training images held out for validation; 0 trains on all 60,000, with no
                validation: then the best checkpoint is the last, and no calibration is fitted.
            seed: Seed of the train/validation split and of the shuffling order.
            random_crop: Training augmentation: pad by this many pixels and crop back to 28x28 at a
                random offset (0 turns it off).
            horizontal_flip: Training augmentation: true mirrors a random half of each batch
                left to right; "alternate" mirrors each image in every other epoch instead
                (airbench's derandomised flip): a seeded hash of the sample picks its side in the
                first epoch, then it alternates, so two epochs see every image both ways.
            random_erasing: Training augmentation: the probability that an image gets a random
                rectangle (2% to 40% of its area, aspect 0.3 to 3.3) replaced by noise (Zhong et
                al., arXiv:1708.04896). 0 turns it off.
            photometric: Training augmentation for robustness: the probability that an image gets
                a random gamma, contrast, brightness and Gaussian grain (photometric.py), so that
                a grey floor, a faded garment or noise is not new at test time. 0 turns it off.
            download: Allow torchvision to download the data when no local copy is found.
            predict_path: `predict` classifies these photos instead of the test set: an image
                file, a folder (searched recursively) or a glob; PNG, JPEG, WebP, BMP or GIF.
        """
        super().__init__()
        for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if value < 1:
                raise FashionLightningError(f"--data.{name} is {value}; it must be at least 1.")
        if not 0 <= val_size < 60000:
            raise FashionLightningError(
                f"--data.val_size is {val_size}; it must lie between 0 (no validation: train on "
                f"all 60000) and 59999 (default 5000)."
            )
        for name, p in (("random_erasing", random_erasing), ("photometric", photometric)):
            if not 0.0 <= p <= 1.0:
                raise FashionLightningError(
                    f"--data.{name} is {p}; it is a probability per training image: use a "
                    f"number from 0 (off) to 1."
                )
        if random_crop < 0:
            raise FashionLightningError(
                f"--data.random_crop is {random_crop}; use 0 (off) or more."
            )
        self.save_hyperparameters(logger=False)  # TensorBoardImages logs them with results
        self.data_dir, self.download, self.seed = data_dir, download, seed
        self.batch_size, self.eval_batch_size, self.val_size = batch_size, eval_batch_size, val_size
        self.random_crop, self.horizontal_flip = random_crop, horizontal_flip
        self.random_erasing, self.photometric = random_erasing, photometric
        self.predict_path = predict_path
        self.splits: dict[str, tuple[Tensor, Tensor]] = {}
        self.photos: photos.Photos | None = None  # what `predict_path` named, once loaded

    def prepare_data(self) -> None:
        """Find (or download) the files once, before any process reads them; predicting photos
        needs none."""
        if not (self.predict_path and self.trainer is not None and self.trainer.predicting):
            idx.find_data_dir(self.data_dir, self.download)

    def load(self, stage: str | None = None) -> None:
        """Read and validate the files into memory; idempotent, so the CLI can call it early.
        Predicting photos (`predict_path`) reads only the photos: no data set needed."""
        if stage == "predict" and self.predict_path:
            self.load_photos()
            return
        if "train" in self.splits:
            return
        folder = idx.find_data_dir(self.data_dir, self.download)
        train_images, train_labels = _as_tensors(*idx.load_split(folder, "train"))
        if self.val_size >= len(train_labels):
            raise FashionLightningError(
                f"--data.val_size is {self.val_size} but {folder} holds only {len(train_labels)} "
                f"training images; choose a smaller val_size."
            )
        order = torch.from_numpy(np.random.default_rng(self.seed).permutation(len(train_labels)))
        val, train = order[: self.val_size], order[self.val_size :]
        self.splits.update(
            train=(train_images[train], train_labels[train]),
            val=(train_images[val], train_labels[val]),
            test=_as_tensors(*idx.load_split(folder, "test")),
        )
        self.splits.setdefault("predict", self.splits["test"])

    def load_photos(self) -> None:
        """The photos of `predict_path` as the predict split (label -1: unknown). A file that
        fails keeps its place as a blank image, so every file gets its row in predictions.csv."""
        if self.photos is None:
            self.photos = photos.load_photos(self.predict_path)
            images = torch.from_numpy(self.photos.images).unsqueeze(1)  # (N, 1, 28, 28)
            self.splits["predict"] = (images, torch.full((len(images),), -1))

    def setup(self, stage: str) -> None:
        self.load(stage)

    def _batches(self, split: str, train: bool = False) -> TensorBatches:
        images, labels = self.splits[split]
        trainer = self.trainer
        return TensorBatches(
            images,
            labels,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            seed=self.seed,
            rank=trainer.global_rank if trainer else 0,
            world_size=trainer.world_size if trainer else 1,
        )

    def train_dataloader(self) -> TensorBatches:
        return self._batches("train", train=True)

    def val_dataloader(self) -> TensorBatches:
        return self._batches("val")

    def test_dataloader(self) -> TensorBatches:
        return self._batches("test")

    def predict_dataloader(self) -> TensorBatches:
        return self._batches("predict")

    def on_after_batch_transfer(self, batch: Batch, dataloader_idx: int) -> Batch:
        """Normalize (and, when training, augment) on the device. `predict` keeps the uint8
        images: it runs the one inference path, which normalizes them itself. Images alone
        (the model summary's example input) are normalized only."""
        if isinstance(batch, Tensor):
            return self.transform(batch)
        images, labels, index = batch
        trainer = self.trainer
        if trainer is not None and trainer.predicting:
            return batch
        training = trainer is not None and trainer.training
        epoch = trainer.current_epoch if trainer is not None else 0
        return self.transform(images, augment=training, index=index, epoch=epoch), labels, index

    @staticmethod
    def to_uint8(x: Tensor) -> Tensor:
        """Undo `transform`'s normalization: float batch -> uint8 images for display."""
        return (x * idx.PIXEL_STD + idx.PIXEL_MEAN).mul(255).round().clamp(0, 255).to(torch.uint8)

    def transform(
        self, images: Tensor, augment: bool = False, index: Tensor | None = None, epoch: int = 0
    ) -> Tensor:
        """uint8 (B, 1, 28, 28) -> normalized float32, augmented when `augment` is set; the
        alternating flip mirrors by the samples' `index` in the split (default: their position
        in the batch) and the `epoch`."""
        flip: bool | Tensor = bool(self.horizontal_flip)
        if augment and self.horizontal_flip == "alternate":
            index = torch.arange(len(images)) if index is None else index
            flip = alternating_mirror(index.to(images.device), epoch, self.seed)
        if augment and (self.random_crop or self.horizontal_flip):  # on uint8: 4x fewer bytes
            images = random_crop_flip(images, self.random_crop, flip)
        if augment and self.photometric:  # before erasing: the erased noise stays full-range
            images = photometric_jitter(images, self.photometric)
        if augment and self.random_erasing:
            images = random_erase(images, self.random_erasing)
        return normalize(images)


def normalize(images: Tensor) -> Tensor:
    """uint8 images -> float32 with the training set's mean 0 and std 1: what every network sees
    (also inside exported models, so they take uint8 images as the data set stores them)."""
    return images.float().sub_(255 * idx.PIXEL_MEAN).mul_(1 / (255 * idx.PIXEL_STD))


def _as_tensors(images: np.ndarray, labels: np.ndarray) -> tuple[Tensor, Tensor]:
    """(N, 28, 28) uint8 and (N,) uint8 arrays -> (N, 1, 28, 28) uint8 and (N,) int64 tensors."""
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels).long()


def random_crop_flip(x: Tensor, pad: int, flip: bool | Tensor) -> Tensor:
    """Shift each image by its own random offset in [-pad, pad]^2, filling with black, and
    mirror a random half of them if `flip` is True, or those marked in `flip` (B,) bool: all in
    one gather from the zero-padded batch, since a mirrored crop reads its columns right to
    left."""
    b, _, h, w = x.shape
    padded = torch.nn.functional.pad(x[:, 0], (pad, pad, pad, pad))  # (B, H + 2 pad, W + 2 pad)
    dy, dx = torch.randint(0, 2 * pad + 1, (2, b, 1), device=x.device)
    cols = torch.arange(w, device=x.device).expand(b, w)
    if isinstance(flip, Tensor):
        cols = torch.where(flip[:, None], cols.flip(-1), cols)
    elif flip:
        mirrored = torch.rand(b, 1, device=x.device) < 0.5
        cols = torch.where(mirrored, cols.flip(-1), cols)
    rows = (torch.arange(h, device=x.device) + dy)[:, :, None]  # (B, H, 1)
    cols = (cols + dx)[:, None, :]  # (B, 1, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    return padded[batch, rows, cols].unsqueeze(1)  # (B, 1, H, W)


def alternating_mirror(index: Tensor, epoch: int, seed: int) -> Tensor:
    """(B,) bool: whether the samples `index` (B,) int64 are mirrored in `epoch`. A sample's
    first side is one bit of an integer hash of (seed, index), so it is the same on every DDP
    rank and after a resume (the trainer restores the epoch); then it alternates."""
    h = index * 0x9E3779B1 + seed * 0x85EBCA77  # int64 arithmetic wraps: a hash, not a sum
    h = (h ^ (h >> 16)) * 0x45D9F3B  # two rounds of xor-shift-multiply mix every input bit
    h = (h ^ (h >> 16)) * 0x45D9F3B
    return ((h >> 16) & 1).bool() ^ bool(epoch % 2)


def random_erase(x: Tensor, p: float, area: tuple[float, float] = (0.02, 0.4)) -> Tensor:
    """Replace a random rectangle of each image, with probability `p`, by uniform noise: one mask
    for the whole batch, built from per-image corners by broadcasting, no loop over images."""
    b, _, h, w = x.shape
    rand = torch.rand(5, b, device=x.device)
    size = (area[0] + (area[1] - area[0]) * rand[0]) * h * w  # (B,) pixels to erase
    aspect = torch.exp(math.log(0.3) + (math.log(1 / 0.3) - math.log(0.3)) * rand[1])
    eh = (size * aspect).sqrt().round().clamp(1, h).long()  # (B,) rectangle height
    ew = (size / aspect).sqrt().round().clamp(1, w).long()
    y0 = (rand[2] * (h - eh + 1)).long()[:, None, None]  # (B, 1, 1) top row
    x0 = (rand[3] * (w - ew + 1)).long()[:, None, None]
    rows = torch.arange(h, device=x.device)[None, :, None]  # (1, H, 1)
    cols = torch.arange(w, device=x.device)[None, None, :]  # (1, 1, W)
    inside = (rows >= y0) & (rows < y0 + eh[:, None, None]) & (cols >= x0)
    inside &= cols < x0 + ew[:, None, None]
    mask = (inside & (rand[4] < p)[:, None, None]).unsqueeze(1)  # (B, 1, H, W)
    noise = torch.randint_like(x, 0, 256)
    return torch.where(mask, noise, x)
