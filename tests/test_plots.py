"""Pictures and the report: every PNG is valid and of the expected size; every file is written."""

import json
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from conftest import FittedRun, assert_user_error, synthetic_split

from fashion_lightning.cli.main import cli_main
from fashion_lightning.data.idx import CLASS_NAMES
from fashion_lightning.evaluation import plots
from fashion_lightning.reference.__main__ import main as reference_main

IMAGES, LABELS = synthetic_split(60, seed=0)
PROBS = np.random.default_rng(0).dirichlet(np.full(10, 0.3), size=60)
MATRIX = np.bincount(LABELS * 10 + PROBS.argmax(1), minlength=100).reshape(10, 10)
HISTORY = pd.DataFrame(
    {
        "epoch": [1, 2, 3],
        "train_loss": [1.0, 0.7, 0.5],
        "val_loss": [0.9, 0.8, 0.7],
        "train_acc": [0.6, 0.7, 0.8],
        "val_acc": [0.55, 0.65, 0.7],
    }
)


@pytest.mark.parametrize(
    "make",
    [
        lambda: plots.sample_grid(IMAGES, LABELS, CLASS_NAMES, per_class=4),
        lambda: plots.training_curves(HISTORY),
        lambda: plots.confusion_matrix(MATRIX, CLASS_NAMES),
        lambda: plots.misclassified_grid(IMAGES, LABELS, PROBS, CLASS_NAMES, n=6),
        lambda: plots.prediction_bars(IMAGES[0], PROBS[0], CLASS_NAMES, int(LABELS[0])),
    ],
    ids=["samples", "curves", "confusion", "misclassified", "prediction"],
)
def test_each_plot_writes_a_png_of_its_figure_size(make, tmp_path: Path) -> None:
    fig = make()
    width, height = (fig.get_size_inches() * 100).round().astype(int)
    path = plots.save_png(fig, tmp_path / "figure.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[:2] == (height, width)
    assert pixels.std() > 0.05  # something is drawn


def test_curves_draw_the_numpy_reference_history(fake_data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "metrics.json"
    reference_main(
        [
            "--data-dir",
            str(fake_data_dir),
            "--epochs",
            "2",
            "--hidden",
            "16",
            "--batch-size",
            "32",
            "--metrics-json",
            str(out),
        ]
    )
    history = pd.DataFrame(json.loads(out.read_text())["history"])
    fig = plots.training_curves(history)
    labels = [line.get_label() for ax in fig.axes for line in ax.get_lines()]
    assert labels == ["train", "test", "train", "test"]


def test_per_class_table_from_a_known_matrix() -> None:
    matrix = np.array([[8, 2], [1, 9]])
    table = plots.per_class_table(matrix, ["a", "b"])
    assert table.loc["a", "precision"] == pytest.approx(8 / 9)
    assert table.loc["a", "recall"] == pytest.approx(0.8)
    assert table.loc["b", "f1"] == pytest.approx(2 * (9 / 11) * 0.9 / (9 / 11 + 0.9))
    assert list(table["support"]) == [10, 10]


def test_report_writes_every_file(cnn_run: FittedRun, fake_data_dir: Path) -> None:
    ckpt = cnn_run.best
    out = cli_main(["report", f"--ckpt_path={ckpt}", f"--data_dir={fake_data_dir}"])
    assert out == cnn_run.run / "report"
    expected = {
        "samples.png",
        "confusion_matrix.png",
        "misclassified.png",
        "prediction.png",
        "curves.png",
        "per_class.csv",
        "per_class.md",
        "report.md",
        "calibration.png",
    }
    assert {p.name for p in out.iterdir()} == expected
    table = pd.read_csv(out / "per_class.csv", index_col="class")
    assert list(table.index) == list(CLASS_NAMES) and table["support"].sum() == 40
    report_md = (out / "report.md").read_text()
    assert (
        "Test accuracy:" in report_md and "![Confusion matrix](confusion_matrix.png)" in report_md
    )
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".report")] == []
    again = cli_main(["report", f"--ckpt_path={ckpt}", f"--data_dir={fake_data_dir}"])
    assert again == out and (out / "report.md").is_file()  # a report folder is replaced


def test_report_errors_leave_nothing_behind(
    mlp_run: FittedRun, fake_data_dir: Path, capsys, run_dir: Path
) -> None:
    ckpt = mlp_run.best
    blocker = run_dir / "file.txt"
    blocker.write_text("a file, not a folder")
    (run_dir / "mine").mkdir()
    (run_dir / "mine" / "notes.txt").write_text("the user's own folder")
    cases = [
        ([f"--ckpt_path={ckpt}", f"--out={blocker}/report"], "cannot create a folder there"),
        ([f"--ckpt_path={ckpt}", f"--out={run_dir / 'mine'}"], "is not a report folder"),
        (["--ckpt_path=missing.ckpt"], "does not exist"),
    ]
    for args, words in cases:
        assert_user_error(["report", *args, f"--data_dir={fake_data_dir}"], capsys, words)
    assert sorted(p.name for p in run_dir.iterdir()) == ["file.txt", "lightning_logs", "mine"]
    assert [p.name for p in (run_dir / "mine").iterdir()] == ["notes.txt"]
    assert not (mlp_run.run / "report").exists()


def test_ctrl_c_during_report_is_one_line_and_leaves_no_folder(
    mlp_run: FittedRun, fake_data_dir: Path, capsys, run_dir: Path, monkeypatch
) -> None:
    """Ctrl+C lands wherever the report is (here: while it draws its pictures)."""

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("fashion_lightning.experiments.report.write_report", interrupted)
    out = run_dir / "report"
    with pytest.raises(SystemExit) as stopped:
        cli_main(["report", f"--ckpt_path={mlp_run.best}", f"--out={out}"])
    err = capsys.readouterr().err
    assert stopped.value.code == 130 and "Traceback" not in err
    assert err.strip().splitlines() == ["report: stopped by Ctrl+C."]
    assert not out.exists() and not list(run_dir.glob(".report*"))


def test_photo_grid_draws_what_the_model_saw_light_on_dark() -> None:
    """A 28x28 input is a light garment on black: drawn so, beside the photo it came from."""
    photo = np.full((40, 40, 3), 255, dtype=np.uint8)
    seen = np.zeros((1, 28, 28), dtype=np.uint8)
    seen[0, 10:18, 10:18] = 255
    fig = plots.photo_grid([photo], seen, ["shirt.jpg"], ["Shirt 90%"])
    fig.canvas.draw()
    drawn = fig.axes[1].images[0].make_image(fig.canvas.get_renderer(), unsampled=True)[0]
    assert drawn[0, 0, :3].max() == 0 and drawn[14, 14, :3].min() == 255  # black, and white
