"""`python -m fashion_lightning runs`: one pandas table of every run under lightning_logs/.

A run is a folder with a status file (`run_status.py`) or checkpoints: ordinary fits, tune's trials
and repeat's seeds alike. Its settings come from its `config.yaml`, flattened to dotted keys
(`model.optimizer.lr`; a `class_path` becomes the class's name under its own key, `model.net`);
the ones that differ between the runs shown become columns by themselves. Its curves and best
val/acc come from its TensorBoard event files, read with TensorBoard's own reader.
"""

import difflib
import json
import math
import os
import socket
import textwrap
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from fashion_lightning.atomic import atomic_path
from fashion_lightning.errors import FashionLightningError
from fashion_lightning.experiments.history import run_history
from fashion_lightning.training.run_status import STATES, STATUS_FILE, process_alive, read_status

# A `running` run whose process is gone and whose heartbeat (written at each epoch end) is older
# than this is shown as killed; the age guards against a pid reused by another process.
STALE_SECONDS = 180
METRICS = ("epochs", "val/acc", "test/acc", "fit_s")
# Columns every table has; the differing settings go between the first five and the metrics.
FIRST = ("run", "started", "state", "net", "recipe")
LAST = (*METRICS, "precision", "device")
# Config keys never compared, with what lies under them: they differ between any two runs by
# construction. And keys shown as columns of their own (net, the precision actually used).
NOT_SETTINGS = ("trainer.logger", "ckpt_path", "config")
OWN_COLUMNS = ("model.net", "trainer.precision")
SEED = "seed_everything"
OUT_SUFFIXES = (".csv", ".md", ".json")


@dataclass
class Run:
    """One run folder: its table row, its settings, and its val/acc per epoch."""

    row: dict[str, Any]
    settings: dict[str, Any]
    curve: pd.DataFrame | None  # columns epoch, val_acc


def runs(
    root: str = "lightning_logs",
    where: list[str] | None = None,
    sort: str | None = None,
    columns: list[str] | None = None,
    group_by: str | None = None,
    out: str | None = None,
    plot: str | None = None,
) -> pd.DataFrame:
    """Print one table of every run under a folder: fits, tune's trials and repeat's seeds.

    One row per run: its folder, when it started, its state (running, finished, stopped,
    diverged, failed, killed, or unknown for folders from before status files), network and
    recipe, the settings that differ between the runs shown (from their config.yaml), epochs
    done, best val/acc, test/acc (fit's own final test), fit seconds, precision and device.

    Args:
        root: The folder to search for runs, at any depth.
        where: Keep only runs where KEY=VALUE (repeatable; all must hold). KEY is a column or any
            config key (model.optimizer.lr, or its full path with init_args); numbers compare by
            value, so 5e-3 matches 0.005.
        sort: The column or config key to sort by; prefix `-` for descending, e.g. -test/acc.
        columns: The columns to show, instead of the default ones (e.g. run test/acc).
        group_by: KEY[,KEY]: one row per group instead, with the mean, sample std and n of every
            metric over its runs (no std for n = 1).
        out: Also write the table to this file, .csv, .md or .json by its suffix.
        plot: Also draw each group's val/acc curves (mean and a band of one std) beside a dot plot
            of test/acc to this PNG; groups are --group_by's, or else runs that differ only by
            seed.
    """
    check_suffixes(out, plot)
    found = [read_run(folder, Path(root)) for folder in find_runs(Path(root))]
    if not found:
        raise FashionLightningError(
            f"--root {root}: no runs there (a run is a folder with {STATUS_FILE} or checkpoints/, "
            f"as `fit`, `tune` and `repeat` write). Give the folder your runs were logged to, "
            f"e.g. --root lightning_logs, or run a fit first."
        )
    table = full_table(found)
    for condition in where or []:
        table = table[matches(table, *parse_where(table, condition))]
    differing = differing_settings(table)
    shown = [*FIRST, *differing, *LAST]
    keys = [resolve(table, key, "--group_by") for key in group_by.split(",")] if group_by else []
    if sort:
        column = resolve(table, sort.removeprefix("-"), "--sort")
        table = table.sort_values(column, ascending=not sort.startswith("-"), kind="stable")
    result = grouped(table, keys) if keys else table
    if columns:  # any column or config key
        result = result[[resolve(result, c, "--columns") for c in columns]]
    elif not keys:
        result = table[shown]
    print_table(result)
    if out:
        write_table(result, Path(out))
    if plot:
        by = keys or ["recipe", "net", *(k for k in differing if k != SEED)]
        draw(table, found, by, Path(plot))
    return result


def check_suffixes(out: str | None, plot: str | None) -> None:
    if out and Path(out).suffix not in OUT_SUFFIXES:
        raise FashionLightningError(
            f"--out {out}: the suffix says the format; use .csv, .md or .json, e.g. --out runs.csv."
        )
    if plot and Path(plot).suffix != ".png":
        raise FashionLightningError(f"--plot {plot}: the picture is a PNG; name it e.g. runs.png.")


def find_runs(root: Path) -> list[Path]:
    """Every folder under `root` holding a status file or checkpoints (not looking inside it)."""
    found = []
    for folder, subfolders, files in os.walk(root):
        if STATUS_FILE in files or "checkpoints" in subfolders:
            found.append(Path(folder))
            subfolders.clear()
        subfolders.sort()
    return found


def read_run(folder: Path, root: Path) -> Run:
    """A run's row (see `runs`), settings and val/acc curve, whatever it is missing."""
    status = read_status(folder) or {}
    settings = read_settings(folder)
    history = run_history(folder)
    validated = history is not None and "val_acc" in history
    curve = history[["epoch", "val_acc"]].dropna() if validated else None
    row = {
        "run": str(folder.relative_to(root)) if folder != root else ".",
        "started": started(folder, status),
        "state": state_of(status, time.time()),
        "net": settings.get("model.net"),
        "recipe": status.get("recipe"),
        "epochs": status.get("epochs", len(history) if history is not None else None),
        "val/acc": curve["val_acc"].max() if curve is not None and len(curve) else None,
        "test/acc": status.get("test_acc", last_scalar(folder, "test/acc")),
        "fit_s": round(status["fit_seconds"], 1) if status.get("fit_seconds") else None,
        "precision": status.get("precision", settings.get("trainer.precision")),
        "device": status.get("device"),
    }
    return Run(row, settings, curve)


def state_of(status: dict[str, Any], now: float) -> str:
    """The status file's state; `killed` for a stale `running` one whose process is gone;
    `unknown` with no status file."""
    state = status.get("state")
    if state not in STATES:
        return "unknown"
    stale = now - float(status.get("heartbeat") or 0) > STALE_SECONDS
    here = status.get("host") == socket.gethostname()
    if state == "running" and stale and here and not process_alive(int(status.get("pid", -1))):
        return "killed"
    return state


def started(folder: Path, status: dict[str, Any]) -> str:
    """When the run started: its status file says, else its first event file's name does."""
    when = status.get("started")
    if when is None:
        stamps = [p.name.split(".")[3] for p in folder.glob("events.out.tfevents.*")]
        when = min((int(s) for s in stamps if s.isdigit()), default=folder.stat().st_mtime)
    return datetime.fromtimestamp(float(when)).strftime("%Y-%m-%d %H:%M")


def last_scalar(folder: Path, tag: str) -> float | None:
    """The last value of a scalar in a run's event files (test/acc of a run without status)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not list(folder.glob("events.out.tfevents.*")):
        return None
    events = EventAccumulator(str(folder), size_guidance={"images": 1})
    events.Reload()
    return events.Scalars(tag)[-1].value if tag in events.Tags()["scalars"] else None


def read_settings(folder: Path) -> dict[str, Any]:
    """A run's config.yaml as flat dotted keys; empty when it has none or it cannot be read."""
    try:
        config = yaml.safe_load((folder / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return flatten(config) if isinstance(config, dict) else {}


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """{"model": {"net": {"class_path": "a.CNN", "init_args": {"dropout": 0}}}} becomes
    {"model.net": "CNN", "model.net.dropout": 0}: the keys the CLI accepts, shortest form."""
    if isinstance(node, dict) and "class_path" in node:
        short = {prefix: str(node["class_path"]).rsplit(".", 1)[-1]}
        return {**short, **flatten(node.get("init_args") or {}, prefix)}
    if isinstance(node, dict):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    if isinstance(node, list):  # hashable and comparable, as the CLI would take it
        return {prefix: json.dumps(node, separators=(", ", ": "))}
    return {prefix: node}


def full_table(found: list[Run]) -> pd.DataFrame:
    """Every run's row and every setting of any run, as columns (missing ones empty)."""
    rows = [{**run.settings, **run.row} for run in found]
    table = pd.DataFrame(rows, dtype=object)
    for metric in METRICS:
        table[metric] = pd.to_numeric(table[metric], errors="coerce")
    return table


def differing_settings(table: pd.DataFrame) -> list[str]:
    """The config keys whose values are not all the same over the table's rows."""
    keys = [c for c in table.columns if c not in (*FIRST, *LAST, *OWN_COLUMNS)]
    keys = [k for k in keys if not k.startswith(tuple(f"{n}." for n in NOT_SETTINGS))]
    return [k for k in keys if k not in NOT_SETTINGS and table[k].map(repr).nunique() > 1]


def resolve(table: pd.DataFrame, key: str, option: str) -> str:
    """The column `key` names: as given, or a config key's full form (with init_args)."""
    short = key.replace(".init_args", "").replace(".class_path", "")
    for candidate in (key, short):
        if candidate in table.columns:
            return candidate
    close = difflib.get_close_matches(short, [str(c) for c in table.columns], n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise FashionLightningError(
        f"{option} {key}: no run has that column or config key.{hint} Columns: "
        f"{', '.join([*FIRST, *LAST])}; config keys as `fit --print_config` shows them, e.g. "
        f"model.optimizer.lr or data.batch_size."
    )


def parse_where(table: pd.DataFrame, condition: str) -> tuple[str, str]:
    key, equals, value = condition.partition("=")
    if not equals or not key.strip():
        raise FashionLightningError(
            f"--where {condition}: write it KEY=VALUE, e.g. --where model.optimizer.lr=0.005 or "
            f"--where state=finished (repeat --where for several conditions, all must hold)."
        )
    return resolve(table, key.strip(), "--where"), value.strip()


def matches(table: pd.DataFrame, column: str, wanted: str) -> pd.Series:
    """Which rows hold `wanted` in `column`: numbers by value, the rest as text."""
    return table[column].map(lambda cell: same_value(cell, wanted))


def missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def plain(value: Any) -> Any:
    """784 rather than 784.0 (pandas makes integers floats beside missing values)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def same_value(cell: Any, wanted: str) -> bool:
    if missing(cell):
        return wanted.lower() in ("", "null", "none")
    if isinstance(cell, bool):
        return wanted.lower() == str(cell).lower()
    if isinstance(cell, int | float):
        try:
            return math.isclose(float(cell), float(wanted), rel_tol=1e-9)
        except ValueError:
            return False
    return str(cell).replace(" ", "") == wanted.replace(" ", "")


def grouped(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """One row per group: its keys, n (its runs), and the mean and sample std of each metric."""
    rows = []
    for values, group in table.groupby(keys, dropna=False, sort=True):
        row: dict[str, Any] = dict(zip(keys, values if isinstance(values, tuple) else (values,)))
        row["n"] = len(group)
        for metric in METRICS:
            row[f"{metric} mean"], row[f"{metric} std"] = mean_std(group[metric])
        rows.append(row)
    return pd.DataFrame(rows)


def mean_std(values: pd.Series) -> tuple[float, float]:
    """The mean and sample standard deviation (n - 1) of the values measured; std is NaN for one."""
    measured = pd.to_numeric(values, errors="coerce").dropna()
    return float(measured.mean()), float(measured.std(ddof=1))


def print_table(table: pd.DataFrame) -> None:
    with pd.option_context("display.width", 250, "display.max_columns", 40):
        print(table.to_string(index=False, na_rep="", float_format=lambda v: f"{v:.4g}"))


def write_table(table: pd.DataFrame, path: Path) -> None:
    """The table as .csv, .md or .json, written aside and moved into place."""
    with atomic_path(path) as partial:
        if path.suffix == ".csv":
            table.to_csv(partial, index=False)
        elif path.suffix == ".json":
            table.to_json(partial, orient="records", indent=1)
        else:
            partial.write_text(markdown(table))
    print(f"Written: {path}")


def markdown(table: pd.DataFrame) -> str:
    """A Markdown table (pandas' to_markdown needs the `tabulate` package)."""

    def cell(value: Any) -> str:
        if missing(value):
            return ""
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(map(str, table.columns)) + " |"]
    lines.append("|" + "---|" * len(table.columns))
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def draw(table: pd.DataFrame, found: list[Run], keys: list[str], path: Path) -> None:
    """The comparison picture of the table's runs, grouped by `keys` (see plots.run_comparison),
    each group labelled by the keys whose values differ between the groups."""
    from fashion_lightning.evaluation import plots

    curves = {run.row["run"]: run.curve for run in found}
    parts = list(table.groupby(keys, dropna=False, sort=True)) if keys else [((), table)]
    values = [v if isinstance(v, tuple) else (v,) for v, _ in parts]
    varying = [i for i in range(len(keys)) if len({repr(v[i]) for v in values}) > 1]
    groups = []
    for group_values, (_, group) in zip(values, parts):
        label = group_label([(keys[i], group_values[i]) for i in varying])
        group_curves = [curves[r] for r in group["run"] if curves[r] is not None]
        groups.append(plots.RunGroup(label, group_curves, list(group["test/acc"].dropna())))
    plots.save_png(plots.run_comparison(groups), path)
    print(f"Written: {path}")


def group_label(settings: list[tuple[str, Any]], width: int = 34, lines: int = 3) -> str:
    """`lr=0.005, dropout=0.2`, each key by its last part, wrapped to a few short lines."""
    shown = [(key.rsplit(".", 1)[-1], value) for key, value in settings if not missing(value)]
    text = ", ".join(f"{key}={plain(value)}" for key, value in shown) or "all runs"
    wrapped = textwrap.wrap(text, width)
    return "\n".join(wrapped[:lines]) + (" ..." if len(wrapped) > lines else "")
