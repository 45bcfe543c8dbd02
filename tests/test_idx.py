"""The IDX reader and the data search: round trips, every bad-file case, and the real files."""

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import synthetic_split, write_dataset, write_idx
from torchvision.datasets.mnist import read_image_file, read_label_file

from fashion_lightning.data import idx
from fashion_lightning.errors import FashionLightningError


@pytest.mark.parametrize("name", ["images.gz", "images"])
def test_read_idx_round_trip(tmp_path: Path, name: str) -> None:
    images, labels = synthetic_split(12, seed=0)
    assert np.array_equal(idx.read_idx(write_idx(tmp_path / name, images)), images)
    assert np.array_equal(idx.read_idx(write_idx(tmp_path / "labels", labels)), labels)


def test_load_split_shapes(fake_data_dir: Path) -> None:
    images, labels = idx.load_split(fake_data_dir, "train")
    assert images.shape == (96, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (96,) and labels.max() < idx.NUM_CLASSES


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def _garble(path: Path) -> None:
    path.write_bytes(b"\x1f\x8b" + bytes(range(256)) * 4)


def _wrong_magic(path: Path) -> None:
    write_idx(path, synthetic_split(96, 1)[0], magic=0x0D03)


def _fewer_labels(path: Path) -> None:
    write_idx(path.parent / "train-labels-idx1-ubyte.gz", synthetic_split(95, 1)[1])


def _label_out_of_range(path: Path) -> None:
    write_idx(path.parent / "train-labels-idx1-ubyte.gz", np.full(96, 10, dtype=np.uint8))


def _cut_in_header(path: Path) -> None:
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:10]))


def _labels_as_images(path: Path) -> None:
    write_idx(path, synthetic_split(96, 1)[1])


def _short_payload(path: Path) -> None:
    data = gzip.decompress(path.read_bytes())[:-28]
    path.write_bytes(gzip.compress(data))


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (_truncate, "truncated"),
        (_garble, "not valid gzip"),
        (_wrong_magic, "magic number"),
        (_short_payload, "header promises"),
        (_fewer_labels, "do not belong together"),
        (_label_out_of_range, "label 10"),
        (_cut_in_header, "truncated inside its header"),
        (_labels_as_images, "expected (N, 28, 28) images"),
    ],
)
def test_bad_files_raise_one_clear_error(tmp_path: Path, damage, words: str) -> None:
    folder = write_dataset(tmp_path / "data")
    images = folder / "train-images-idx3-ubyte.gz"
    damage(images)
    with pytest.raises(FashionLightningError) as error:
        idx.load_split(folder, "train")
    message = str(error.value)
    assert words in message
    assert str(folder) in message and "apt-get install dataset-fashion-mnist" in message


@pytest.mark.parametrize("make", [lambda p: None, lambda p: p.mkdir()], ids=["missing", "empty"])
def test_named_folder_without_files_is_an_error(tmp_path: Path, make) -> None:
    folder = tmp_path / "nowhere"
    make(folder)
    with pytest.raises(FashionLightningError, match="data_dir option") as error:
        idx.find_data_dir(folder)
    assert str(folder) in str(error.value)


def test_env_var_is_used_and_never_falls_through(
    tmp_path: Path, fake_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(idx.ENV_VAR, str(fake_data_dir))
    assert idx.find_data_dir() == fake_data_dir
    monkeypatch.setenv(idx.ENV_VAR, str(tmp_path / "missing"))
    with pytest.raises(FashionLightningError, match=idx.ENV_VAR):
        idx.find_data_dir()


def test_nothing_found_lists_every_place(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(idx, "SEARCH_PATHS", [run_dir / "a", run_dir / "b"])
    with pytest.raises(FashionLightningError) as error:
        idx.find_data_dir(download=False)
    message = str(error.value)
    for place in ("data_dir option", idx.ENV_VAR, str(run_dir / "a"), str(run_dir / "b")):
        assert place in message
    assert "apt-get install dataset-fashion-mnist" in message and "download=True" in message


def test_a_failed_download_leaves_no_folder_and_says_so(run_dir: Path, monkeypatch) -> None:
    """No network: torchvision's download fails, its half-made folder goes, one paragraph."""

    def no_network(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.delenv(idx.ENV_VAR, raising=False)
    monkeypatch.setattr(idx, "SEARCH_PATHS", [run_dir / "absent"])
    monkeypatch.setattr(idx, "DOWNLOAD_ROOT", run_dir / "data")
    monkeypatch.setattr("torchvision.datasets.FashionMNIST", no_network)
    with pytest.raises(FashionLightningError, match="download into .* failed"):
        idx.find_data_dir()
    assert not (run_dir / "data").exists()


def test_search_order_prefers_earlier_paths(tmp_path: Path, monkeypatch) -> None:
    first, second = write_dataset(tmp_path / "first"), write_dataset(tmp_path / "second")
    monkeypatch.delenv(idx.ENV_VAR, raising=False)
    monkeypatch.setattr(idx, "SEARCH_PATHS", [tmp_path / "absent", second, first])
    assert idx.find_data_dir(download=False) == second


@pytest.mark.parametrize("split", ["train", "test"])
def test_reader_matches_torchvision_on_real_files(
    real_data_dir: Path, tmp_path: Path, split: str
) -> None:
    images, labels = idx.load_split(real_data_dir, split)
    assert len(images) == (60000 if split == "train" else 10000)
    raw = {}
    for name in idx.FILES[split]:  # torchvision's readers take uncompressed files only
        source = idx.find_file(real_data_dir, name)
        with gzip.open(source) if source.suffix == ".gz" else open(source, "rb") as f:
            (tmp_path / name).write_bytes(f.read())
        raw[name] = tmp_path / name
    image_file, label_file = (raw[n] for n in idx.FILES[split])
    assert np.array_equal(read_image_file(str(image_file)).numpy(), images)
    assert np.array_equal(read_label_file(str(label_file)).numpy(), labels)


def test_raw_and_gz_files_are_both_found(tmp_path: Path, fake_data_dir: Path) -> None:
    folder = tmp_path / "raw"
    folder.mkdir()
    for path in fake_data_dir.iterdir():
        with gzip.open(path) as f, open(folder / path.stem, "wb") as out:
            shutil.copyfileobj(f, out)
    assert idx.missing_files(folder) == []
    assert np.array_equal(
        idx.load_split(folder, "test")[1], idx.load_split(fake_data_dir, "test")[1]
    )
