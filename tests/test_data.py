"""The DataModule: batches, split, sharding, normalization and augmentation."""

from pathlib import Path

import pytest
import torch
from conftest import write_dataset

from fashion_lightning.data import idx
from fashion_lightning.data.datamodule import (
    FashionMNISTDataModule,
    TensorBatches,
    random_crop_flip,
    random_erase,
)
from fashion_lightning.data.photometric import photometric_jitter
from fashion_lightning.errors import FashionLightningError


def sample_ids(images: torch.Tensor) -> set[int]:
    """The id that `synthetic_split` writes into pixels (0, 0) and (0, 1) of every image."""
    return {int(a) * 256 + int(b) for a, b in images[:, 0, 0, :2].tolist()}


def loaded(data_dir: Path, **kwargs) -> FashionMNISTDataModule:
    dm = FashionMNISTDataModule(data_dir=str(data_dir), val_size=16, batch_size=16, **kwargs)
    dm.setup("fit")
    return dm


def test_batches_have_the_right_shapes_and_types(fake_data_dir: Path) -> None:
    dm = loaded(fake_data_dir)
    images, labels, index = next(iter(dm.train_dataloader()))
    assert images.shape == (16, 1, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (16,) and labels.dtype == torch.int64
    assert torch.equal(dm.splits["train"][1][index], labels)  # a batch names its samples
    assert len(dm.train_dataloader()) == 5 and len(dm.test_dataloader()) == 1
    assert dm.class_names[0] == "T-shirt/top" and dm.num_classes == 10


def test_split_is_deterministic_disjoint_and_complete(fake_data_dir: Path) -> None:
    a, b, c = loaded(fake_data_dir), loaded(fake_data_dir), loaded(fake_data_dir, seed=1)
    train, val = sample_ids(a.splits["train"][0]), sample_ids(a.splits["val"][0])
    assert len(val) == 16 and not train & val and len(train | val) == 96
    assert val == sample_ids(b.splits["val"][0])
    assert val != sample_ids(c.splits["val"][0])


def test_training_order_is_reshuffled_each_epoch_and_reproducible(fake_data_dir: Path) -> None:
    def epochs(dm: FashionMNISTDataModule) -> list[torch.Tensor]:
        loader = dm.train_dataloader()
        return [torch.cat([y for _, y, _ in loader]) for _ in range(2)]

    first, second = epochs(loaded(fake_data_dir)), epochs(loaded(fake_data_dir))
    assert all(torch.equal(x, y) for x, y in zip(first, second))
    assert not torch.equal(first[0], first[1])


@pytest.mark.parametrize("n", [40, 41])
def test_ddp_shards_count_every_eval_sample_once(n: int) -> None:
    images, labels = torch.zeros(n, 1, 28, 28, dtype=torch.uint8), torch.arange(n)
    seen = [
        torch.cat([y for _, y, _ in TensorBatches(images, labels, 8, rank=r, world_size=3)])
        for r in range(3)
    ]
    assert sorted(torch.cat(seen).tolist()) == list(range(n))


def test_ddp_training_shards_are_disjoint_and_equal() -> None:
    images, labels = torch.zeros(41, 1, 28, 28, dtype=torch.uint8), torch.arange(41)
    shards = [TensorBatches(images, labels, 8, shuffle=True, rank=r, world_size=2) for r in (0, 1)]
    seen = [torch.cat([y for _, y, _ in shard]) for shard in shards]
    assert len(seen[0]) == len(seen[1]) == 20 and len(shards[0]) == len(shards[1]) == 3
    assert not set(seen[0].tolist()) & set(seen[1].tolist())


def test_transform_normalizes_with_the_dataset_statistics(fake_data_dir: Path) -> None:
    dm = loaded(fake_data_dir)
    images = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1)
    out = dm.transform(images).flatten()
    expected = torch.tensor([0.0, 1.0]).sub(idx.PIXEL_MEAN).div(idx.PIXEL_STD)
    assert torch.allclose(out, expected)


def test_real_training_pixels_are_standardized(real_data_dir: Path) -> None:
    dm = FashionMNISTDataModule(data_dir=str(real_data_dir))
    dm.setup("fit")
    x = dm.transform(dm.splits["train"][0])
    assert abs(x.mean().item()) < 0.01 and abs(x.std().item() - 1) < 0.01
    assert len(dm.splits["train"][1]) == 55000 and len(dm.splits["test"][1]) == 10000


def test_random_crop_shifts_content_within_the_padding() -> None:
    x = torch.zeros(64, 1, 28, 28)
    x[:, :, 10:18, 10:18] = 1.0
    out = random_crop_flip(x, pad=2, flip=False)
    assert out.shape == x.shape and torch.all(out.sum(dim=(1, 2, 3)) == 64)
    rows = out.sum(dim=(1, 3)).squeeze(1).argmax(dim=-1)  # first lit row per image
    assert rows.min() >= 8 and rows.max() <= 12 and len(rows.unique()) > 1


def test_random_flip_mirrors_about_half() -> None:
    x = torch.arange(28.0).expand(200, 1, 28, 28)
    out = random_crop_flip(x, pad=0, flip=True)
    flipped = out[:, 0, 0, 0] == 27
    assert torch.equal(out[flipped], x[flipped].flip(-1)) and torch.equal(
        out[~flipped], x[~flipped]
    )
    assert 60 < flipped.sum() < 140


def test_crop_and_flip_together_keep_every_pixel_of_a_centred_image() -> None:
    x = torch.zeros(100, 1, 28, 28)
    x[:, :, 6:22, 4:20] = torch.arange(1.0, 17.0)  # a left-to-right ramp: flips are visible
    out = random_crop_flip(x, pad=2, flip=True)
    assert torch.equal(out.sum(dim=(1, 2, 3)), x.sum(dim=(1, 2, 3)))
    ramp = out[:, 0].amax(dim=1)  # (B, W): brightest pixel per column
    lit = ramp > 0
    rising = torch.stack([r[m].diff().gt(0).all() for r, m in zip(ramp, lit)])
    assert 20 < rising.sum() < 80  # some mirrored, some not


def test_alternating_flip_mirrors_each_image_in_every_other_epoch(fake_data_dir: Path) -> None:
    dm = loaded(fake_data_dir)
    dm.horizontal_flip = "alternate"
    x = torch.arange(28, dtype=torch.uint8).expand(200, 1, 28, 28)
    index = torch.randperm(200, generator=torch.Generator().manual_seed(0))
    mirrored = [
        dm.to_uint8(dm.transform(x, augment=True, index=index, epoch=e))[:, 0, 0, 0] == 27
        for e in range(3)
    ]
    assert 60 < mirrored[0].sum() < 140  # the first epoch mirrors a hashed half
    assert torch.equal(mirrored[1], ~mirrored[0]) and torch.equal(mirrored[2], mirrored[0])
    again = dm.transform(x[:10], augment=True, index=index[:10], epoch=1)  # a resumed epoch 1
    assert torch.equal(dm.to_uint8(again)[:, 0, 0, 0] == 27, mirrored[1][:10])
    assert torch.equal(dm.transform(x, index=index, epoch=1), dm.transform(x))  # eval: never


def test_transform_round_trips_to_uint8(fake_data_dir: Path) -> None:
    images = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    dm = loaded(fake_data_dir)
    assert torch.equal(FashionMNISTDataModule.to_uint8(dm.transform(images)), images)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("val_size", -1),
        ("batch_size", 0),
        ("random_crop", -1),
        ("random_erasing", 1.5),
        ("photometric", -0.1),
        ("photometric", float("nan")),
    ],
)
def test_bad_options_name_themselves(option: str, value: float) -> None:
    with pytest.raises(FashionLightningError, match=f"--data.{option}"):
        FashionMNISTDataModule(**{option: value})


def test_val_size_larger_than_the_data_is_an_error(fake_data_dir: Path) -> None:
    with pytest.raises(FashionLightningError, match="val_size"):
        FashionMNISTDataModule(data_dir=str(fake_data_dir), val_size=500).setup("fit")


def test_missing_data_is_downloaded_only_when_allowed(run_dir: Path, monkeypatch) -> None:
    monkeypatch.setattr(idx, "SEARCH_PATHS", [run_dir / "nowhere"])
    monkeypatch.setattr(idx, "_download", lambda: write_dataset(run_dir / "downloaded"))
    with pytest.raises(FashionLightningError, match="was not found") as refused:
        FashionMNISTDataModule(val_size=16, download=False).setup("fit")
    assert "the download into" not in str(refused.value)  # not even tried
    dm = FashionMNISTDataModule(val_size=16)
    dm.setup("fit")
    assert len(dm.splits["test"][1]) == 40


def test_random_erasing_replaces_one_rectangle_in_about_p_of_the_images() -> None:
    x = torch.full((400, 1, 28, 28), 7, dtype=torch.uint8)
    out = random_erase(x, p=0.5)
    changed = out != x  # noise can hit 7 by chance: a rectangle with a few holes
    erased = changed.flatten(1).any(dim=1)
    assert out.dtype == torch.uint8 and 140 < erased.sum() < 260
    for mask in changed[erased][:50, 0]:
        rows, cols = mask.any(dim=1).nonzero(), mask.any(dim=0).nonzero()
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert 0.015 * 784 <= box <= 0.41 * 784  # 2% to 40% of the image
        assert mask.sum() >= 0.9 * box  # one filled rectangle, not scattered pixels
    assert torch.equal(random_erase(x, p=0.0), x)


def test_photometric_jitter_changes_about_p_of_the_images_reproducibly(fake_data_dir: Path) -> None:
    dm = loaded(fake_data_dir, photometric=0.5)
    x = torch.zeros(400, 1, 28, 28, dtype=torch.uint8)
    x[:, :, 8:20, 8:20] = 200  # a light square on black, like a garment
    torch.manual_seed(0)
    out = dm.transform(x, augment=True)
    torch.manual_seed(0)
    assert torch.equal(dm.transform(x, augment=True), out)  # the global seed decides
    assert not torch.equal(dm.transform(x, augment=True), out)  # and the next batch differs
    changed = (dm.to_uint8(out) != x).flatten(1).any(dim=1)
    assert 140 < changed.sum() < 260
    background, garment = dm.to_uint8(out)[changed, 0, 0, 0], dm.to_uint8(out)[changed, 0, 12, 12]
    assert background.float().mean() > 10 and garment.float().std() > 10  # grey floors, fades
    assert torch.equal(dm.transform(x), loaded(fake_data_dir).transform(x))  # eval: never
    assert torch.equal(photometric_jitter(x, 0.0), x)
