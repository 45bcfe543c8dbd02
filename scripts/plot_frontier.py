"""The cost curve: test accuracy against the whole `fit` command's time, from the benchmark's CSV.

One point per (recipe, precision, device, epochs) of `bench_time_to_accuracy.py --csv`: the mean over its
seeds with one sample std as error bars both ways, time on a log scale. Each device's tutorial
epoch is a cross, so a ratio can be read off; the field's published figures, which give no time,
are horizontal lines, and airbench's CIFAR-10 speedrun a point for scale (another data set).

    python scripts/plot_frontier.py frontier_cpu.csv [frontier_gpu.csv ...] --out docs/frontier.png

`--exclude NAME ...` leaves out the rows of recipes by name (e.g. a recipe's earlier version kept
in the measurements under its own name), so the picture shows what ships.
"""

import argparse
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from fashion_lightning.evaluation.plots import save_png
from fashion_lightning.experiments.runs import mean_std

# Fashion-MNIST, single model, no extra data: best accuracy published, no time given.
ANCHORS = (
    (96.7, "Zalando's benchmark: WRN-40-4 96.7%"),
    (96.35, "random erasing: WRN-28-10 96.35% (300 epochs)"),
    (94.9, "Zalando's benchmark: ResNet-18 94.9%"),
)
AIRBENCH = (3.0, 94.0, "airbench: CIFAR-10 94% in ~3 s\n(one A100; other data set, for scale)")
# A recipe cut short (--epochs, --extra) is another point, not a draw of the same one.
GROUP = ["recipe", "precision", "device", "epochs"]


def groups(table: pd.DataFrame) -> pd.DataFrame:
    """One row per recipe, precision and device: n and the mean and std of time and accuracy."""
    rows = []
    for keys, group in table.groupby(GROUP, sort=False):
        (seconds, seconds_std), (acc, acc_std) = (
            mean_std(group[c]) for c in ("seconds", "test_acc")
        )
        row = dict(zip(GROUP, keys), n=len(group), seconds=seconds, seconds_std=seconds_std)
        rows.append({**row, "acc": 100 * acc, "acc_std": 100 * acc_std})
    return pd.DataFrame(rows).fillna({"seconds_std": 0.0, "acc_std": 0.0})


def frontier(table: pd.DataFrame) -> Figure:
    """The picture: recipes as points with error bars, tutorial epochs, anchors."""
    fig, ax = plt.subplots(figsize=(10, 6), layout="constrained")
    points = groups(table).sort_values("seconds").reset_index(drop=True)
    for i, p in enumerate(points.itertuples(index=False)):
        ax.errorbar(
            p.seconds,
            p.acc,
            xerr=p.seconds_std,
            yerr=p.acc_std,
            fmt="o",
            color=f"C{i % 10}",
            capsize=3,
            label=f"{p.recipe}, {p.precision}, {p.device}, {p.epochs} epochs (n={p.n})",
        )
        short = p.precision.split("-")[0]  # bf16, 32, 16
        # Alternate above/below among the faster points of about the same accuracy.
        below = int((abs(points["acc"][:i] - p.acc) < 0.5).sum()) % 2
        ax.annotate(
            f"{p.recipe} {short}",
            (p.seconds, p.acc),
            xytext=(5, -12 if below else 5),
            textcoords="offset points",
            fontsize=9,
        )
    for device, group in table.groupby("device", sort=False):
        seconds, acc = (
            group["tutorial_epoch_seconds"].mean(),
            100 * group["tutorial_test_acc"].mean(),
        )
        ax.plot(seconds, acc, "kx", markersize=9, mew=2)
        ax.annotate(
            f"tutorial loop, 1 epoch\n({device})",
            (seconds, acc),
            xytext=(6, -4),
            textcoords="offset points",
            fontsize=8,
            va="top",
        )
    draw_anchors(ax)
    low = min(points["acc"].min() - points["acc_std"].max(), 100 * table["tutorial_test_acc"].min())
    ax.set_ylim(low - 1, 97.5)
    ax.set_xscale("log")
    left, right = ax.get_xlim()
    ax.set_xlim(left, right * 1.6)  # room for the slowest point's label
    ax.xaxis.set_major_formatter(FuncFormatter(lambda seconds, _: f"{seconds:g} s"))
    ax.set_xlabel("whole `fit` command, start to exit (seconds, log scale)")
    ax.set_ylabel("test accuracy (%), mean ± sample std over seeds")
    ax.set_title("Fashion-MNIST: accuracy against time")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
    return fig


def draw_anchors(ax) -> None:
    """The published figures as labelled lines at the left edge, airbench as a labelled point."""
    for acc, label in ANCHORS:
        ax.axhline(acc, color="grey", linestyle="--", linewidth=1)
        ax.annotate(
            label,
            (0.01, acc),
            xycoords=("axes fraction", "data"),
            xytext=(0, 2),
            textcoords="offset points",
            fontsize=8,
            color="dimgrey",
        )
    seconds, acc, label = AIRBENCH
    ax.plot(seconds, acc, marker="*", color="grey", markersize=12, linestyle="none")
    ax.annotate(label, (seconds, acc), xytext=(8, -6), textcoords="offset points", fontsize=8)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("csv", nargs="+", type=Path, help="bench_time_to_accuracy.py --csv files")
    parser.add_argument("--out", type=Path, default=Path("docs/frontier.png"))
    parser.add_argument("--exclude", nargs="*", default=[], help="recipe names to leave out")
    options = parser.parse_args(argv)
    table = pd.concat([pd.read_csv(path) for path in options.csv], ignore_index=True)
    table = table[~table["recipe"].isin(options.exclude)]
    path = save_png(frontier(table), options.out)
    print(f"Written: {path}")
    return path


if __name__ == "__main__":
    main()
