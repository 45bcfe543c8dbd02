"""The docs describe the product as it is: tables rendered from their CSVs, links that resolve, a
README that stays a front door."""

import importlib.util
import re
import statistics
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\((?!https?://|mailto:|#)([^)\s#]+)")


@pytest.fixture(scope="module")
def tables() -> ModuleType:
    """scripts/render_docs_tables.py as a module."""
    spec = importlib.util.spec_from_file_location("tables", ROOT / "scripts/render_docs_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_table_is_its_csv_rendered(tables: ModuleType, page: Path) -> None:
    assert tables.rendered(page) == page.read_text(), (
        f"a table in {page.name} disagrees with docs/measurements/: "
        "run `python scripts/render_docs_tables.py`"
    )


def test_a_benchmark_table_is_the_mean_and_std_over_seeds(tables: ModuleType) -> None:
    seeds = [(0.931, 50.0), (0.935, 54.0), (0.933, 52.0)]
    rows = [
        {"recipe": "cnn_fast", "epochs": "4", "test_acc": str(acc), "val_acc": "", "seconds": str(s),
         "tutorial_epoch_seconds": "40.0", "ratio": str(s / 40), "gflop_epoch": "1424.4", "gflops": "150"}
        for acc, s in seeds
    ] + [{"recipe": "mlp", "epochs": "30", "test_acc": "0.9", "val_acc": "0.91", "seconds": "60",
          "tutorial_epoch_seconds": "40.0", "ratio": "1.5", "gflop_epoch": "", "gflops": ""}]  # fmt: skip
    header, rule, fast, mlp = tables.bench_table(rows).splitlines()
    acc = [100 * a for a, _ in seeds]
    mean_std = f"{statistics.mean(acc):.2f}% ± {statistics.stdev(acc):.2f}%"
    assert fast.split(" | ")[1:8] == [
        "4",
        "3",
        mean_std,
        "-",
        "52.0 ± 2.0 s",
        "40.0 s",
        "1.30 ± 0.05x",
    ]
    assert mlp == "| mlp | 30 | 1 | 90.00% | 91.00% | 60.0 s | 40.0 s | 1.50x | - | - |"
    assert tables.machine_cell(rows[:3]).startswith(mean_std + " (3 seeds), 52 s")
    assert tables.machine_cell([]) == "unmeasured"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page: Path) -> None:
    missing = [link for link in LINK.findall(page.read_text()) if not (page.parent / link).exists()]
    assert not missing, f"{page.name} links to files that do not exist: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_docs_tell_the_product_not_its_history(page: Path) -> None:
    commit = r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{7,40}\b"
    history = re.findall(rf"\bissue \d+|{commit}", page.read_text(), re.I)
    assert not history, f"{page.name} speaks of issues or commits: {history}"


def test_the_readme_is_a_front_door() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250
