"""`python -m fashion_lightning report --ckpt_path PATH [--out DIR]`: a checkpoint's results as a
folder of pictures and tables.

The checkpoint is evaluated on the official test set; the folder gets the sample grid, confusion
matrix, most confident mistakes, one prediction's probabilities, the training curves (when the
run's TensorBoard event files sit beside the checkpoint), a per-class table as CSV and Markdown, and
`report.md` embedding them all. It is written to a temporary folder and moved into place, so a
failed report leaves nothing behind.
"""

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from fashion_lightning.atomic import give_umask_mode
from fashion_lightning.data.datamodule import FashionMNISTDataModule
from fashion_lightning.data.idx import CLASS_NAMES
from fashion_lightning.errors import FashionLightningError
from fashion_lightning.evaluation import plots
from fashion_lightning.evaluation.calibration import calibration_error, reliability
from fashion_lightning.evaluation.inference import ProbabilityModel, predict_images
from fashion_lightning.evaluation.robustness import CORRUPTIONS, corrupted
from fashion_lightning.experiments.history import run_history
from fashion_lightning.training.checkpoint import Checkpoint
from fashion_lightning.training.module import ClassifierModule

# Test images `--robustness` corrupts: 39 passes over them stay cheap on a CPU (about +-0.6% on
# an accuracy near 90%).
ROBUSTNESS_IMAGES = 2000


def report(
    ckpt_path: str, out: str | None = None, data_dir: str | None = None, robustness: bool = False
) -> Path:
    """Evaluate a checkpoint on the test set and write its report folder.

    Args:
        ckpt_path: A checkpoint written by `python -m fashion_lightning fit`.
        out: The report folder (replaced if it exists). Default: `report/` in the checkpoint's run
            folder, e.g. lightning_logs/version_0/report.
        data_dir: Folder with the IDX files; default: the one the checkpoint was trained on.
        robustness: Also measure the accuracy under 13 corruptions at 3 severities each, on the
            first 2000 test images: robustness.csv (corruption, severity, accuracy) and
            robustness.png.
    """
    checkpoint = Checkpoint.read(ckpt_path)  # read once: the model and its data settings
    classifier = checkpoint.model()
    model = ProbabilityModel(classifier)
    out_dir = Path(out) if out else checkpoint.path.resolve().parent.parent / "report"
    data = {**checkpoint.config["data"], **({"data_dir": data_dir} if data_dir else {})}
    datamodule = FashionMNISTDataModule(**data)  # the data options it was trained with
    datamodule.load()
    images, labels = datamodule.splits["test"]
    probs = predict_images(model, images)[0].numpy()
    history = run_history(checkpoint.path.resolve().parent.parent)
    with StagingFolder(out_dir) as folder:
        write_report(folder, images[:, 0].numpy(), labels.numpy(), probs, history, ckpt_path)
        write_calibration(folder, classifier, labels.numpy(), probs)
        if robustness:
            write_robustness(folder, model, images, labels)
    print(f"Report written to {out_dir / 'report.md'}")
    return out_dir


class StagingFolder:
    """A temporary folder beside `target` that replaces `target` only if the block succeeds.
    An existing `target` is replaced only if it is a report folder (it holds report.md): `--out`
    must never delete a folder of the user's."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __enter__(self) -> Path:
        if self.target.exists() and not (self.target / "report.md").is_file():
            raise FashionLightningError(
                f"--out {self.target} already exists and is not a report folder (it has no "
                f"report.md); it is left untouched. Choose a new folder, e.g. --out reports/my_run."
            )
        try:
            self.target.parent.mkdir(parents=True, exist_ok=True)
            self.tmp = Path(
                tempfile.mkdtemp(prefix=f".{self.target.name}.", dir=self.target.parent)
            )
            give_umask_mode(self.tmp)
        except OSError as e:
            raise FashionLightningError(
                f"--out {self.target}: cannot create a folder there ({e.strerror}: {e.filename}). "
                f"Choose a folder you can write to, e.g. --out reports/my_run."
            ) from None
        return self.tmp

    def __exit__(self, kind, error, traceback) -> None:
        if kind is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        old = self.tmp.with_name(self.tmp.name + ".old")
        if self.target.exists():
            os.replace(self.target, old)  # moved aside first: no moment without a report
        os.replace(self.tmp, self.target)
        shutil.rmtree(old, ignore_errors=True)


def write_report(
    folder: Path,
    images: np.ndarray,
    labels: np.ndarray,
    probs: np.ndarray,
    history: pd.DataFrame | None,
    ckpt_path: str,
) -> None:
    """Every picture and table, then report.md embedding them."""
    preds = probs.argmax(axis=1)
    matrix = np.bincount(labels * len(CLASS_NAMES) + preds, minlength=len(CLASS_NAMES) ** 2)
    matrix = matrix.reshape(len(CLASS_NAMES), len(CLASS_NAMES))
    wrong = np.flatnonzero(preds != labels)
    example = int(wrong[0]) if len(wrong) else 0
    figures = {
        "samples.png": plots.sample_grid(images, labels, CLASS_NAMES),
        "confusion_matrix.png": plots.confusion_matrix(matrix, CLASS_NAMES),
        "misclassified.png": plots.misclassified_grid(images, labels, probs, CLASS_NAMES),
        "prediction.png": plots.prediction_bars(
            images[example], probs[example], CLASS_NAMES, int(labels[example])
        ),
    }
    if history is not None:
        figures["curves.png"] = plots.training_curves(history)
    for name, fig in figures.items():
        plots.save_png(fig, folder / name)
    table = plots.per_class_table(matrix, CLASS_NAMES)
    table.to_csv(folder / "per_class.csv", float_format="%.4f")
    markdown = markdown_table(table)
    (folder / "per_class.md").write_text(markdown + "\n")
    accuracy = float((preds == labels).mean())
    (folder / "report.md").write_text(
        _report_markdown(ckpt_path, accuracy, len(labels), markdown, figures)
    )


def _report_markdown(ckpt_path: str, accuracy: float, n: int, table: str, figures: dict) -> str:
    sections = [
        f"# Report: {ckpt_path}\n",
        f"Test accuracy: **{accuracy:.2%}** on the official {n:,} test images.\n",
        "## Per class\n",
        table + "\n",
    ]
    captions = {
        "curves.png": "Training curves",
        "confusion_matrix.png": "Confusion matrix",
        "misclassified.png": "Most confident mistakes",
        "prediction.png": "One image's predicted probabilities (the first mistake)",
        "samples.png": "Test images per class",
    }
    for name, caption in captions.items():
        if name in figures:
            sections.append(f"## {caption}\n\n![{caption}]({name})\n")
    return "\n".join(sections)


def markdown_table(table: pd.DataFrame) -> str:
    """The per-class table in Markdown (pandas' to_markdown would need the `tabulate` package)."""
    header = "| class | " + " | ".join(table.columns) + " |"
    rule = "|---|" + "---:|" * len(table.columns)
    rows = [
        f"| {name} | {row.precision:.4f} | {row.recall:.4f} | {row.f1:.4f} | {int(row.support)} |"
        for name, row in table.iterrows()
    ]
    return "\n".join([header, rule, *rows])


def write_calibration(folder: Path, model: ClassifierModule, labels: np.ndarray, probs: np.ndarray):
    """calibration.png (reliability before and after temperature scaling) and its section in
    report.md; a checkpoint from before calibration existed is said to be uncalibrated."""
    calibrated = torch.from_numpy(probs)
    # softmax(T * log p) undoes the scaling: log p is logits / T up to a constant per row
    raw = (model.temperature * calibrated.clamp(min=1e-30).log()).softmax(-1)
    target = torch.from_numpy(labels).long()
    curves = {"uncalibrated": raw, f"calibrated (T = {model.temperature:.3f})": calibrated}
    if model.ood_state is None:
        curves = {"uncalibrated": raw}
    eces = {name: calibration_error(p, target) for name, p in curves.items()}
    bins = {name: tuple(t.numpy() for t in reliability(p, target)) for name, p in curves.items()}
    plots.save_png(plots.reliability_diagram(bins, eces), folder / "calibration.png")
    if model.ood_state is None:
        text = (
            f"This checkpoint is **uncalibrated**: it was written before calibration existed "
            f"(or by a fit with no validation), so T = 1 and it has no ood score. Test ECE "
            f"(15 bins): {eces['uncalibrated']:.2%}."
        )
    else:
        before, after = eces.values()
        text = (
            f"Temperature T = {model.temperature:.3f}, fitted on the validation split. "
            f"Test ECE (15 bins): {before:.2%} uncalibrated, {after:.2%} calibrated."
        )
    section = f"## Calibration\n\n{text}\n\n![Reliability diagram](calibration.png)\n"
    with (folder / "report.md").open("a") as f:
        f.write("\n" + section)


def robustness_table(model: ProbabilityModel, images: Tensor, labels: Tensor):
    """Accuracy per corruption and severity on the first ROBUSTNESS_IMAGES test images (with the
    clean accuracy as severity 0), and the strongest example image of each corruption."""
    images, labels = images[:ROBUSTNESS_IMAGES], labels[:ROBUSTNESS_IMAGES]
    rows = [("none", 0, accuracy_of(model, images, labels))]
    examples = {}
    for name in CORRUPTIONS:
        for level in (1, 2, 3):
            corrupt = corrupted(images, name, level)
            rows.append((name, level, accuracy_of(model, corrupt, labels)))
        examples[name] = corrupt[0, 0].numpy()
    return pd.DataFrame(rows, columns=["corruption", "severity", "accuracy"]), examples


def accuracy_of(model: ProbabilityModel, images: Tensor, labels: Tensor) -> float:
    return float((predict_images(model, images)[0].argmax(-1) == labels).float().mean())


def write_robustness(folder: Path, model: ProbabilityModel, images: Tensor, labels: Tensor):
    """robustness.csv, robustness.png and their section in report.md."""
    table, examples = robustness_table(model, images, labels)
    table.to_csv(folder / "robustness.csv", index=False, float_format="%.4f")
    strongest = table[table["severity"] == 3].set_index("corruption")["accuracy"]
    captions = {name: f"{acc:.1%}" for name, acc in strongest.items()}
    plots.save_png(plots.corruption_examples(examples, captions), folder / "robustness.png")
    corrupt = table[table["severity"] > 0]
    clean = table["accuracy"][0]
    pivot = corrupt.pivot(index="corruption", columns="severity", values="accuracy")
    lines = ["| corruption | 1 | 2 | 3 |", "|---|---:|---:|---:|"]
    lines += [
        f"| {name} | " + " | ".join(f"{a:.2%}" for a in row) + " |"
        for name, row in pivot.loc[list(CORRUPTIONS)].iterrows()
    ]
    section = (
        f"## Accuracy under corruption\n\nFirst {min(len(labels), ROBUSTNESS_IMAGES):,} test "
        f"images: clean {clean:.2%}, mean over corruptions and severities "
        f"{corrupt['accuracy'].mean():.2%}.\n\n"
        + "\n".join(lines)
        + "\n\n![Corruptions](robustness.png)\n"
    )
    with (folder / "report.md").open("a") as f:
        f.write("\n" + section)
