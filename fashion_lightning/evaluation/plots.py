"""Pictures of data and results, as matplotlib Figures (Agg backend: no display needed).

Every function takes plain NumPy arrays or a pandas DataFrame and returns a Figure; the caller saves
it as a PNG (`save_png`) or sends it to TensorBoard (`logger.experiment.add_figure`). Images are
drawn dark-on-white (the `gray_r` colormap) so they read on paper as well as on screen.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from fashion_lightning.atomic import atomic_path  # noqa: E402

IMAGE_CMAP = "gray_r"  # garments dark on white, as in the papers' figures
SEEN_CMAP = "gray"  # an image as the model sees it: light on dark, as the serve page draws it
TRAIN, EVAL = "#1f77b4", "#d62728"  # blue and red stay distinct in grayscale print too


def sample_grid(
    images: np.ndarray, labels: np.ndarray, class_names: Sequence[str], per_class: int = 8
) -> Figure:
    """One row per class: its name, then the first `per_class` images of that class."""
    n_classes = len(class_names)
    fig, axes = plt.subplots(n_classes, per_class, figsize=(per_class * 0.9 + 1.4, n_classes * 0.9))
    for row, name in enumerate(class_names):
        chosen = np.flatnonzero(labels == row)[:per_class]
        for col, ax in enumerate(axes[row]):
            if col < len(chosen):
                ax.imshow(images[chosen[col]], cmap=IMAGE_CMAP, vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.spines[:].set_visible(False)
        axes[row, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=10)
    fig.suptitle("Fashion-MNIST: samples per class")
    fig.tight_layout()
    return fig


def training_curves(history: pd.DataFrame) -> Figure:
    """Loss and accuracy per epoch. `history` has an `epoch` column and any of `train_loss`,
    `val_loss`, `test_loss`, `train_acc`, `val_acc`, `test_acc` (the NumPy reference's
    --metrics-json history has this shape too)."""
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in ((loss_ax, "loss"), (acc_ax, "acc")):
        for split, color, style in (
            ("train", TRAIN, "-"),
            ("val", EVAL, "--"),
            ("test", EVAL, ":"),
        ):
            column = f"{split}_{metric}"
            if column in history and history[column].notna().any():
                rows = history[history[column].notna()]
                ax.plot(
                    rows["epoch"], rows[column], style, color=color, marker="o", ms=3, label=split
                )
        ax.set_xlabel("epoch")
        ax.set_title("cross-entropy loss" if metric == "loss" else "accuracy")
        ax.grid(alpha=0.3)
        ax.legend()
    acc_ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    fig.tight_layout()
    return fig


def confusion_matrix(matrix: np.ndarray, class_names: Sequence[str]) -> Figure:
    """Counts (left) and each true class's row as fractions (right); rows are true classes."""
    matrix = np.asarray(matrix)
    normalized = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig, axes = plt.subplots(1, 2, figsize=(17, 7.5))
    for ax, values, title, fmt in (
        (axes[0], matrix, "counts", lambda v: f"{int(v)}"),
        (
            axes[1],
            normalized,
            "fraction of each true class",
            lambda v: f"{v:.2f}" if v >= 0.005 else "<.01",
        ),
    ):
        ax.imshow(values, cmap="Blues", vmin=0, vmax=values.max() or 1)
        for (i, j), v in np.ndenumerate(values):
            if v:
                dark = v > 0.6 * values.max()
                ax.text(
                    j,
                    i,
                    fmt(v),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if dark else "black",
                )
        ticks = np.arange(len(class_names))
        ax.set_xticks(ticks, class_names, rotation=45, ha="right")
        ax.set_yticks(ticks, class_names)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(f"Confusion matrix: {title}")
    fig.tight_layout()
    return fig


def misclassified_grid(
    images: np.ndarray,
    labels: np.ndarray,
    probs: np.ndarray,
    class_names: Sequence[str],
    n: int = 16,
    title: str | None = None,
) -> Figure:
    """The `n` wrong predictions made with the highest confidence, each titled true / predicted.
    `title` defaults to a count of the mistakes among the images given."""
    preds, confidence = probs.argmax(axis=1), probs.max(axis=1)
    wrong = np.flatnonzero(preds != labels)
    worst = wrong[np.argsort(-confidence[wrong])][:n]
    cols = 4
    rows = max(1, -(-len(worst) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.4, rows * 2.9), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, worst):
        ax.imshow(images[i], cmap=IMAGE_CMAP, vmin=0, vmax=255)
        ax.set_title(
            f"true: {class_names[labels[i]]}\npred: {class_names[preds[i]]} ({confidence[i]:.0%})",
            fontsize=9,
        )
    fig.suptitle(
        title or f"Most confident mistakes ({len(wrong):,} of {len(labels):,} images wrong)"
    )
    fig.tight_layout()
    return fig


def prediction_bars(
    image: np.ndarray, probs: np.ndarray, class_names: Sequence[str], label: int | None = None
) -> Figure:
    """One image beside its predicted class probabilities; the true class is marked."""
    fig, (img_ax, bar_ax) = plt.subplots(1, 2, figsize=(9, 3.6), width_ratios=[1, 1.8])
    img_ax.imshow(image, cmap=IMAGE_CMAP, vmin=0, vmax=255)
    img_ax.axis("off")
    if label is not None:
        img_ax.set_title(f"true class: {class_names[label]}")
    y = np.arange(len(class_names))
    colors = [EVAL if i == label else TRAIN for i in y]
    bar_ax.barh(y, probs, color=colors)
    bar_ax.set_yticks(y, class_names)
    bar_ax.invert_yaxis()
    bar_ax.set_xlim(0, 1)
    bar_ax.xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    bar_ax.set_title(f"predicted: {class_names[int(probs.argmax())]} ({probs.max():.1%})")
    fig.tight_layout()
    return fig


def per_class_table(matrix: np.ndarray, class_names: Sequence[str]) -> pd.DataFrame:
    """Precision, recall, F1 and support per class from a confusion matrix (rows = true class)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    hits = np.diag(matrix)
    precision = hits / np.maximum(matrix.sum(axis=0), 1)
    recall = hits / np.maximum(matrix.sum(axis=1), 1)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    support = matrix.sum(axis=1).astype(int)
    table = pd.DataFrame(
        {"precision": precision, "recall": recall, "f1": f1, "support": support},
        index=pd.Index(list(class_names), name="class"),
    )
    return table


def photo_grid(
    originals: Sequence[np.ndarray],
    seen: np.ndarray,
    names: Sequence[str],
    captions: Sequence[str],
    pairs_per_row: int = 4,
) -> Figure:
    """Each photo (RGB) beside the 28x28 image the model saw, captioned with its prediction."""
    rows = max(1, -(-len(originals) // pairs_per_row))
    fig, axes = plt.subplots(
        rows, 2 * pairs_per_row, figsize=(pairs_per_row * 3.2, rows * 1.9), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    for k, (photo, image, name, caption) in enumerate(zip(originals, seen, names, captions)):
        photo_ax, seen_ax = axes[k // pairs_per_row, 2 * (k % pairs_per_row) :][:2]
        photo_ax.imshow(photo)
        photo_ax.set_title(name if len(name) <= 18 else name[:15] + "...", fontsize=8)
        seen_ax.imshow(image, cmap=SEEN_CMAP, vmin=0, vmax=255)
        seen_ax.set_title(caption, fontsize=8)
    fig.suptitle("Your photos, and the 28x28 images the model saw")
    fig.tight_layout()
    return fig


@dataclass
class RunGroup:
    """Runs compared as one: a label (the settings that set them apart, one per line), each
    run's val/acc curve (a DataFrame with `epoch` and `val_acc`) and each run's test accuracy."""

    label: str
    curves: list[pd.DataFrame]
    test_acc: list[float]


def run_comparison(groups: Sequence[RunGroup]) -> Figure:
    """One row per group, labelled on the right: its runs' val/acc curves, thin, with their mean
    and a band of one standard deviation (left; shared axes), and its runs' test accuracies as
    dots with their mean and a one-std error bar (right; a shared accuracy axis)."""
    n = len(groups)
    size = (11, 0.9 + 1.6 * n)
    layout = {"sharex": "col", "sharey": "col", "width_ratios": [1.3, 1], "layout": "constrained"}
    fig, axes = plt.subplots(n, 2, figsize=size, squeeze=False, **layout)
    colors = plt.get_cmap("tab10").colors
    for i, (group, (curve_ax, dot_ax)) in enumerate(zip(groups, axes)):
        color = colors[i % len(colors)]
        _curves_with_band(curve_ax, group.curves, color)
        _test_dots(dot_ax, group.test_acc, color)
        dot_ax.yaxis.set_label_position("right")
        dot_ax.set_ylabel(group.label, rotation=0, ha="left", va="center", fontsize=9)
        for ax in (curve_ax, dot_ax):
            ax.grid(alpha=0.3)
    percent = matplotlib.ticker.PercentFormatter(1.0, decimals=1)
    axes[0, 0].yaxis.set_major_formatter(percent)
    axes[-1, 1].xaxis.set_major_formatter(percent)
    axes[-1, 0].set_xlabel("epoch")
    axes[-1, 0].xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axes[-1, 1].set_xlabel("test accuracy")
    axes[0, 0].set_title("val/acc per epoch: each run, the mean ± one std", fontsize=10)
    axes[0, 1].set_title("test/acc: each run (dots), the mean ± one std", fontsize=10)
    axes[0, 1].set_yticks([])
    axes[0, 1].set_ylim(-1, 1)
    return fig


def _curves_with_band(ax, curves: list[pd.DataFrame], color) -> None:
    for curve in curves:
        ax.plot(curve["epoch"], curve["val_acc"], color=color, alpha=0.35, lw=0.8)
    if not curves:
        return
    by_epoch = pd.concat(curves).groupby("epoch")["val_acc"]
    mean, std = by_epoch.mean(), by_epoch.std(ddof=1).fillna(0.0)
    low, high = (mean - std).clip(upper=1.0), (mean + std).clip(upper=1.0)  # accuracies
    ax.fill_between(mean.index, low, high, color=color, alpha=0.2, lw=0)
    ax.plot(mean.index, mean, color=color, lw=2, marker="o", ms=3)


def _test_dots(ax, values: list[float], color) -> None:
    """The dots on a line at y = -0.3, their mean and std just above at y = 0.4."""
    if not values:
        return
    ax.scatter(values, [-0.3] * len(values), color=color, alpha=0.6, s=25, zorder=2)
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    mean = [np.mean(values)]
    ax.errorbar(mean, [0.4], xerr=[std], fmt="D", color="black", ms=5, capsize=4, zorder=3)


def save_png(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Save and close (figures hold memory until closed); written aside, then renamed."""
    path = Path(path)
    try:
        with atomic_path(path) as partial:  # layouts are tight already: exact pixel size
            fig.savefig(partial, format="png", dpi=dpi, facecolor="white")
    finally:
        plt.close(fig)
    return path


def reliability_diagram(bins: dict[str, tuple[np.ndarray, ...]], eces: dict[str, float]) -> Figure:
    """Accuracy against confidence per bin, one panel per curve of `bins` (name -> mean
    confidence, accuracy, count per bin, as `calibration.reliability` gives): bars on the
    diagonal are calibrated, below it over-confident, above it under-confident."""
    fig, axes = plt.subplots(1, len(bins), figsize=(4.2 * len(bins), 4.2), squeeze=False)
    for ax, (name, (confidence, accuracy, count)) in zip(axes[0], bins.items()):
        edges = np.linspace(0, 1, len(count) + 1)
        filled = count > 0
        ax.bar(
            edges[:-1][filled],
            accuracy[filled],
            width=np.diff(edges)[filled],
            align="edge",
            color=TRAIN,
            edgecolor="white",
            label="accuracy",
        )
        ax.plot(confidence[filled], confidence[filled], "o", color=EVAL, ms=3, label="confidence")
        ax.plot([0, 1], [0, 1], "--", color="gray", lw=1)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy")
        ax.set_title(f"{name}: ECE {eces[name]:.2%}")
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def corruption_examples(examples: dict[str, np.ndarray], captions: dict[str, str]) -> Figure:
    """One image per corruption (name -> (28, 28) uint8), captioned (e.g. with its accuracy)."""
    cols = 5
    rows = -(-len(examples) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.0, rows * 2.2), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (name, image) in zip(axes.flat, examples.items()):
        ax.imshow(image, cmap=IMAGE_CMAP, vmin=0, vmax=255)
        ax.set_title(f"{name}\n{captions[name]}", fontsize=8)
    fig.suptitle("Corruptions at the strongest severity, with the test accuracy under them")
    fig.tight_layout()
    return fig
