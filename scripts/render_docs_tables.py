"""Render the tables of README.md and docs/*.md from the CSVs in docs/measurements/.

A figure lives once, in its CSV; a page holds the rendered table between two markers:

    <!-- table: measurements/bench_cpu_auto.csv measurements/bench_cpu_auto_resnet.csv -->
    ...rendered here...
    <!-- /table -->

CSV paths are relative to docs/, from the README too. Three kinds of CSV:

- a benchmark's per-seed rows (`scripts/bench_time_to_accuracy.py` writes them): one table row per
  recipe, in the order the recipes first appear, with the mean ± sample std over its seeds;
- `results.csv`, the shipped recipes: each machine's cell is the mean over its benchmark CSVs;
- any other CSV is a finished table: rendered cell for cell.

    python scripts/render_docs_tables.py          # rewrite the tables in place
    python scripts/render_docs_tables.py --check  # exit 1 naming each table that disagrees
"""

import argparse
import csv
import re
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
TABLE = re.compile(r"(<!-- table: (?P<csvs>[^>]*?) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)
BENCH_COLUMNS = ("recipe", "precision", "seed", "test_acc", "val_acc", "seconds")
# The results table's machines: its column title and the benchmark CSVs of its cells.
MACHINES = {
    "CPU with bf16: Zen 4, bf16-mixed": [
        "bench_cpu_auto.csv",
        "bench_cpu_auto_cnn_shipped.csv",
        "bench_cpu_auto_resnet.csv",
    ],
    "CPU without bf16: Zen 3, float32": ["bench_cpu_zen3_auto.csv"],
    "GPU: H200, bf16-mixed": ["bench_gpu.csv", "bench_gpu_wrn.csv"],
}

Rows = list[dict[str, str]]


def read_csv(path: Path) -> Rows:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def markdown(header: list[str], rows: list[list[str]], right: list[bool]) -> str:
    """A GitHub table: numbers right-aligned, text left."""
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---:" if r else "---" for r in right) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def numbers(rows: Rows, column: str) -> list[float]:
    return [float(row[column]) for row in rows if row.get(column, "") != ""]


def plus_minus(values: list[float], fmt: str, unit: str = "") -> str:
    """`mean ± std` over seeds (`%` on both), the mean alone for one value, `-` for none (a fit
    cut short before its first validation has no val/acc)."""
    if not values:
        return "-"
    mean = f"{statistics.mean(values):{fmt}}"
    if len(values) == 1:
        return mean + unit
    std = f"{statistics.stdev(values):{fmt}}"
    return f"{mean}% ± {std}%" if unit == "%" else f"{mean} ± {std}{unit}"


def percent(rows: Rows, column: str) -> str:
    return plus_minus([100 * v for v in numbers(rows, column)], ".2f", "%")


def by_recipe(rows: Rows) -> dict[str, Rows]:
    """The rows of each recipe, in the order the recipes first appear."""
    groups: dict[str, Rows] = {}
    for row in rows:
        groups.setdefault(row["recipe"], []).append(row)
    return groups


def tutorial_epoch(rows: Rows) -> str:
    """The tutorial epoch each seed was timed against: one figure when one run timed it."""
    values = numbers(rows, "tutorial_epoch_seconds")
    return plus_minus(values[:1] if len(set(values)) == 1 else values, ".1f", " s")


def bench_table(rows: Rows) -> str:
    """One row per recipe: accuracy, the whole command's time, its ratio and FLOPs over seeds."""
    header = [
        "recipe", "epochs", "seeds", "test accuracy", "val accuracy", "whole `fit` command",
        "tutorial epoch", "in tutorial epochs", "GFLOP/epoch", "GFLOP/s",
    ]  # fmt: skip
    cells = []
    for recipe, group in by_recipe(rows).items():
        gflop, gflops = numbers(group, "gflop_epoch"), numbers(group, "gflops")
        cells.append([
            recipe,
            group[0]["epochs"],
            str(len(group)),
            percent(group, "test_acc"),
            percent(group, "val_acc"),
            plus_minus(numbers(group, "seconds"), ".1f", " s"),
            tutorial_epoch(group),
            plus_minus(numbers(group, "ratio"), ".2f", "x"),
            f"{statistics.mean(gflop):,.0f}" if gflop else "-",
            f"{statistics.mean(gflops):,.0f}" if gflops else "-",
        ])  # fmt: skip
    return markdown(header, cells, [False] + [True] * (len(header) - 1))


def machine_cell(rows: Rows) -> str:
    """`acc ± std (n seeds), time` of one recipe on one machine, or `unmeasured`."""
    if not rows:
        return "unmeasured"
    seconds = statistics.mean(numbers(rows, "seconds"))
    seeds = f"{len(rows)} seed" + ("s" if len(rows) > 1 else "")
    return f"{percent(rows, 'test_acc')} ({seeds}), {seconds:.0f} s"


def results_table(rows: Rows) -> str:
    """The shipped recipes, one column per machine."""
    runs = {
        title: by_recipe([row for name in csvs for row in read_csv(DOCS / "measurements" / name)])
        for title, csvs in MACHINES.items()
    }
    header = ["recipe", "network", "parameters", "epochs", *MACHINES]
    cells = [
        [f"`{row['recipe']}`", row["network"], f"{int(row['parameters']):,}", row["epochs"]]
        + [machine_cell(runs[title].get(row["recipe"], [])) for title in MACHINES]
        for row in rows
    ]
    return markdown(header, cells, [False, False] + [True] * (len(header) - 2))


def finished_table(path: Path) -> str:
    """A CSV that is already the table: text columns left-aligned, the first always."""
    with path.open(newline="") as f:
        header, *rows = list(csv.reader(f))
    right = [
        i > 0 and any(row[i][:1].isdigit() for row in rows if row[i]) for i in range(len(header))
    ]
    return markdown(header, rows, right)


def render(csvs: list[str]) -> str:
    """The table of one marker: the kind is the CSV's, a benchmark's CSVs concatenated."""
    paths = [DOCS / name for name in csvs]
    if paths[0].name == "results.csv":
        return results_table(read_csv(paths[0]))
    first = read_csv(paths[0])
    if first and all(column in first[0] for column in BENCH_COLUMNS):
        return bench_table([row for path in paths for row in read_csv(path)])
    (path,) = paths
    return finished_table(path)


def rendered(page: Path) -> str:
    """The page with every table between markers rendered from its CSVs."""

    def table(match: re.Match) -> str:
        return match.group(1) + render(match.group("csvs").split()) + match.group(4)

    return TABLE.sub(table, page.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 on a stale table"
    )
    check = parser.parse_args(argv).check
    stale = []
    for page in PAGES:
        text = rendered(page)
        if text != page.read_text():
            stale.append(page.relative_to(ROOT))
            if not check:
                page.write_text(text)
    if stale and check:
        names = ", ".join(map(str, stale))
        print(f"Tables in {names} disagree with docs/measurements/: run "
              "`python scripts/render_docs_tables.py` and commit the result.", file=sys.stderr)  # fmt: skip
        return 1
    for page in stale:
        print(f"rendered the tables of {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
