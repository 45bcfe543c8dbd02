"""Shared fixtures: tiny synthetic IDX files, a run folder, one fitted run per network (fitted
once a session), and the real data when installed."""

import gzip
import shutil
import struct
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fashion_lightning.cli.main import cli_main
from fashion_lightning.data import idx
from fashion_lightning.training.callbacks import PredictionWriter
from fashion_lightning.training.module import ClassifierModule

N_TRAIN, N_TEST = 96, 40
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
COMMAND = [sys.executable, "-m", "fashion_lightning"]  # the command, in a fresh process


def config(name: str) -> str:
    """The CLI option that selects configs/<name>.yaml, from any working directory."""
    return f"--config={CONFIGS / name}.yaml"


def flat(text: str) -> str:
    """Text with every run of whitespace as one space: messages are wrapped at 100 columns."""
    return " ".join(text.split())


def run_folders(root: Path) -> set[Path]:
    """Every run folder (lightning_logs/version_N, at any depth) under `root`."""
    return set(root.glob("**/version_*"))


def assert_user_error(args: list[str], capsys: pytest.CaptureFixture, *words: str) -> str:
    """The CLI refuses `args` as a user's mistake: exit status 2, one paragraph on stderr holding
    `words`, no traceback, and no new run folder under the working directory (TensorBoard would
    list it beside the real runs; run the test in its own `run_dir`). Returns the paragraph,
    whitespace flattened."""
    before = run_folders(Path.cwd())
    with pytest.raises(SystemExit) as exit_info:
        cli_main(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert "Traceback" not in err, err
    assert run_folders(Path.cwd()) == before, "a run folder was left behind"
    for word in words:
        assert word in flat(err), err
    return flat(err)


def scalars(log_dir: str | Path) -> dict[str, list[float]]:
    """Every scalar series in a run's TensorBoard event files."""
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def prediction_writer(cli) -> PredictionWriter:
    return next(c for c in cli.trainer.callbacks if isinstance(c, PredictionWriter))


def predictions_folder(cli) -> Path:
    """Where a `predict` run wrote its predictions (the checkpoint's run folder, or eval/)."""
    return prediction_writer(cli).folder


def predictions_file(cli) -> Path:
    """The predictions file a `predict` run wrote (predictions.csv for the test set)."""
    return prediction_writer(cli).written


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
        "--figures.draw=false",  # pictures only where a test is about them (DRAW)
    ]


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The real Fashion-MNIST files (CI installs them; see README for how)."""
    return idx.find_data_dir(download=False)


@dataclass(frozen=True)
class FittedRun:
    """A finished tiny fit, as later commands see it: the folder it ran in, its run folder
    (lightning_logs/version_0 there), its best checkpoint, what fit measured (test/acc among them)
    and the model fit left in memory."""

    cwd: Path
    run: Path
    best: Path
    metrics: dict[str, float]
    model: ClassifierModule

    def moved_to(self, folder: Path) -> "FittedRun":
        """A copy of the run under `folder`/lightning_logs/, for a test that writes beside the
        checkpoint (predict, report, export): the shared run stays as it was for the others."""
        run = folder / "lightning_logs" / self.run.name
        shutil.copytree(self.run, run)
        return replace(self, cwd=folder, run=run, best=run / self.best.relative_to(self.run))


# One tiny fit of each network serves every test that needs a checkpoint: mlp, and cnn_fast for
# the CNN (flip TTA, so export and evaluation meet the averaged path too). Validation every epoch:
# two val/acc points, and a best checkpoint from the first epoch on.
SHARED_FIT_OPTIONS = ["--trainer.check_val_every_n_epoch=1"]


def listing(folder: Path) -> list[tuple[str, int, int]]:
    """Every file under `folder` with its size and modification time: what a change would touch."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return [(str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in files]


@pytest.fixture(scope="session")
def fit_once(
    fake_data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., FittedRun]]:
    """Fit a recipe (with extra options) on the synthetic data at most once a session, each in its
    own folder. At the end of the session, fail if a test wrote into a shared run (it should use
    a copy)."""
    fitted: dict[str, FittedRun] = {}
    listings: dict[str, list[tuple[str, int, int]]] = {}

    def fit(recipe: str, *extra: str) -> FittedRun:
        key = " ".join([recipe, *extra])
        if key not in fitted:
            folder = tmp_path_factory.mktemp(f"fit_{recipe}")
            with pytest.MonkeyPatch.context() as monkeypatch:
                enter_run_dir(monkeypatch, folder)
                options = [*tiny_options(fake_data_dir), *SHARED_FIT_OPTIONS, *extra]
                cli = cli_main(["fit", config(recipe), *options])
                run = Path(cli.trainer.log_dir).resolve()
                best = Path(cli.trainer.checkpoint_callback.best_model_path).resolve()
            metrics = {k: v.item() for k, v in cli.trainer.callback_metrics.items()}
            fitted[key] = FittedRun(folder.resolve(), run, best, metrics, cli.model)
            listings[key] = listing(folder)
        return fitted[key]

    yield fit
    for recipe, run in fitted.items():
        assert listing(run.cwd) == listings[recipe], f"a test wrote into the shared {recipe} fit"


@pytest.fixture(scope="session")
def mlp_fit(fit_once: Callable[[str], FittedRun]) -> FittedRun:
    """The session's tiny MLP fit: read it, never write into its folder (see `mlp_run`)."""
    return fit_once("mlp")


# The TensorBoard pictures, for the fit whose tests look at them.
DRAW = "--figures.draw=true"


@pytest.fixture(scope="session")
def cnn_fit(fit_once: Callable[..., FittedRun]) -> FittedRun:
    """The session's tiny CNN fit (cnn_fast), with its TensorBoard pictures: read it, never
    write into its folder."""
    return fit_once("cnn_fast", DRAW)


# airbench's network and data methods all on (test_whitening.py, test_data.py, test_tta.py test
# each alone): a whitened stem, dirac init, alternating flips, flip x translate TTA
AIRBENCH_OPTIONS = [
    "--model.net.init_args.whiten_stem=true",
    "--model.net.init_args.dirac_init=true",
    "--data.horizontal_flip=alternate",
    "--model.tta=flip_translate",
]


@pytest.fixture(scope="session")
def airbench_fit(fit_once: Callable[..., FittedRun]) -> FittedRun:
    """The session's tiny cnn_fast fit with `AIRBENCH_OPTIONS` and the stem frozen (so its
    checkpoint still holds the whitening filters): read it, never write into it."""
    return fit_once("cnn_fast", *AIRBENCH_OPTIONS, "--model.net.init_args.freeze_stem=true")


@pytest.fixture
def mlp_run(mlp_fit: FittedRun, run_dir: Path) -> FittedRun:
    """The session's MLP fit, copied into the test's own run folder."""
    return mlp_fit.moved_to(run_dir)


@pytest.fixture
def cnn_run(cnn_fit: FittedRun, run_dir: Path) -> FittedRun:
    """The session's CNN fit, copied into the test's own run folder."""
    return cnn_fit.moved_to(run_dir)
