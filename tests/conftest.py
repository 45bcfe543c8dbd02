"""Shared fixtures: tiny synthetic IDX files, a run folder, and the real data when installed."""

import gzip
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fashion_lightning import idx
from fashion_lightning.callbacks import PredictionWriter

N_TRAIN, N_TEST = 96, 40
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def config(name: str) -> str:
    """The CLI option that selects configs/<name>.yaml, from any working directory."""
    return f"--config={CONFIGS / name}.yaml"


def flat(text: str) -> str:
    """Text with every run of whitespace as one space: messages are wrapped at 100 columns."""
    return " ".join(text.split())


def scalars(log_dir: str | Path) -> dict[str, list[float]]:
    """Every scalar series in a run's TensorBoard event files."""
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def predictions_folder(cli) -> Path:
    """Where a `predict` run wrote predictions.csv (the checkpoint's run folder, or eval/)."""
    return next(c.folder for c in cli.trainer.callbacks if isinstance(c, PredictionWriter))


def write_idx(path: Path, array: np.ndarray, magic: int | None = None) -> Path:
    """Write `array` (uint8) as an IDX file, gzipped when `path` ends in .gz."""
    magic = magic if magic is not None else 0x0800 + array.ndim
    data = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    data += array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def synthetic_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images whose class is drawn as a bright horizontal band (learnable in a few steps), with a
    unique sample id in the first two pixels so tests can track individual images."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % idx.NUM_CLASSES).astype(np.uint8)
    rng.shuffle(labels)
    images = rng.integers(0, 40, size=(n, 28, 28), dtype=np.uint8)
    for i, label in enumerate(labels):
        images[i, 2 + 2 * label : 4 + 2 * label, 4:24] = 250
        images[i, 0, :2] = divmod(i + seed * 1000, 256)
    return images, labels


def write_dataset(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", N_TRAIN, 1), ("test", N_TEST, 2)):
        images, labels = synthetic_split(n, seed)
        image_name, label_name = idx.FILES[split]
        write_idx(folder / f"{image_name}.gz", images)
        write_idx(folder / f"{label_name}.gz", labels)
    return folder


@pytest.fixture(scope="session")
def fake_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with all four IDX files, tiny and synthetic."""
    return write_dataset(tmp_path_factory.mktemp("fashion"))


def enter_run_dir(monkeypatch: pytest.MonkeyPatch, folder: Path) -> Path:
    """Run in `folder` so lightning_logs/ and data/ land there, with no ambient data dir and no
    pytest options in sys.argv for the CLI to see."""
    monkeypatch.chdir(folder)
    monkeypatch.setattr(sys, "argv", ["fashion_lightning"])
    monkeypatch.delenv(idx.ENV_VAR, raising=False)
    return folder


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test runs in its own empty folder (see `enter_run_dir`)."""
    return enter_run_dir(monkeypatch, tmp_path)


@pytest.fixture
def tiny_args(fake_data_dir: Path, run_dir: Path) -> list[str]:
    """`tiny_options` on the synthetic data, for a test in its own run folder."""
    return tiny_options(fake_data_dir)


def tiny_options(data_dir: Path) -> list[str]:
    """CLI options that shrink any config to seconds on the synthetic data in `data_dir`."""
    return [
        f"--data.data_dir={data_dir}",
        "--data.val_size=16",
        "--data.batch_size=16",
        "--data.eval_batch_size=16",
        "--trainer.max_epochs=2",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.log_every_n_steps=1",
        "--trainer.precision=32-true",  # the same numbers on every CPU, bf16 units or not
    ]


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The real Fashion-MNIST files (CI installs them; see README for how)."""
    return idx.find_data_dir(download=False)
