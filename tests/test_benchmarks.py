"""The accuracy benchmark over seeds, its peak arithmetic, and the frontier plot drawn from its CSV."""

import importlib
import statistics
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest
import torch
from conftest import tiny_options

from fashion_lightning.training.run_status import read_status

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
ZEN4 = "vendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel name\t: AMD EPYC 9R14\ncpu MHz\t\t: 2600.000\n"
XEON = "vendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel name\t: Intel Xeon\ncpu MHz\t\t: 2000.0\n"


@pytest.fixture
def script(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], ModuleType]:
    """A script of scripts/ as a module (they import each other by name, as when run)."""
    monkeypatch.syspath_prepend(str(SCRIPTS))
    return importlib.import_module


@pytest.mark.slow  # fit subprocesses and a torchvision tutorial epoch
def test_seeds_give_one_csv_row_each_and_their_mean_and_std(
    script, fake_data_dir: Path, run_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    bench = script("bench_time_to_accuracy")
    tiny = [*tiny_options(fake_data_dir), "--trainer.max_epochs=1"]
    csv, logs = run_dir / "bench.csv", run_dir / "logs"
    args = ["--recipes", "mlp", "--seeds", "2", "--data_dir", str(fake_data_dir), "--csv", str(csv)]
    bench.main([*args, "--logs", str(logs), "--extra", *tiny])
    out = capsys.readouterr().out
    table = pd.read_csv(csv)
    assert list(table.columns) == list(bench.COLUMNS)
    assert list(table["seed"]) == [0, 1]  # repeat's convention: the recipe's seed (0) + k
    assert set(table["recipe"]) == {"mlp"} and set(table["precision"]) == {"32-true"}
    for row in table.itertuples():  # each row is its own run folder's, fitted at its seed
        status = read_status(logs / "auto" / "mlp" / f"seed_{row.seed}")
        assert status["seed"] == row.seed and status["test_acc"] == pytest.approx(row.test_acc)
        assert row.seconds > row.fit_seconds > 0  # the whole command holds the fit
        assert row.ratio == pytest.approx(row.seconds / row.tutorial_epoch_seconds)
    mean, std = statistics.mean(table["test_acc"]), statistics.stdev(table["test_acc"])
    assert f"| mlp | 32-true | 2 | {mean:.2%} ± {std:.2%} |" in out


def test_cpu_peak_is_cores_fma_units_lanes_two_and_clock(script) -> None:
    peak = script("hardware_peak")
    zen4 = peak.read_cpu(ZEN4 + "flags\t: avx2 fma avx512f avx512_bf16\n", lscpu="")
    assert peak.cpu_peak(zen4, 2, "32-true").gflops == pytest.approx(2 * 1 * 16 * 2 * 2.6)
    assert peak.cpu_peak(zen4, 2, "bf16-mixed").gflops == pytest.approx(2 * 166.4)
    assert peak.cpu_peak(zen4, 2, "16-mixed").gflops is None
    xeon = peak.read_cpu(XEON + "flags\t: avx2 fma avx512f amx_bf16\n", "CPU max MHz: 3000.0\n")
    fp32 = peak.cpu_peak(xeon, 4, "32-true")
    assert fp32.gflops == pytest.approx(4 * 2 * 16 * 2 * 3.0) and "lscpu" in fp32.how
    assert peak.cpu_peak(xeon, 4, "bf16-mixed").gflops is None  # AMX: not modelled
    avx2 = peak.read_cpu(XEON + "flags\t: avx2 fma\n", lscpu="")
    assert peak.cpu_peak(avx2, 1, "32-true").gflops == pytest.approx(1 * 2 * 8 * 2 * 2.0)


@pytest.mark.parametrize(
    ("name", "precision", "tflops"),
    [
        ("NVIDIA H200", "bf16-mixed", 989),
        ("NVIDIA H100 80GB HBM3", "bf16-mixed", 989),
        ("NVIDIA A100-SXM4-40GB", "bf16-true", 312),
        ("NVIDIA H100 80GB HBM3", "32-true", None),
        ("NVIDIA GeForce RTX 4090", "bf16-mixed", None),
    ],
)
def test_gpu_peak_is_the_cards_dense_bf16_figure(script, name, precision, tflops) -> None:
    gflops = script("hardware_peak").gpu_peak(name, precision).gflops
    assert gflops == (tflops * 1000 if tflops else None)


def test_frontier_is_drawn_from_a_csv(script, tmp_path: Path) -> None:
    plot = script("plot_frontier")
    rows = [
        ("cnn_fast", "bf16-mixed", 0, 0.926, 41.0),
        ("cnn_fast", "bf16-mixed", 1, 0.930, 43.0),
        ("cnn", "32-true", 0, 0.935, 200.0),
    ]
    table = pd.DataFrame(rows, columns=["recipe", "precision", "seed", "test_acc", "seconds"])
    table = table.assign(
        device="AMD EPYC", epochs=4, tutorial_epoch_seconds=31.0, tutorial_test_acc=0.885
    )
    table.to_csv(tmp_path / "bench.csv", index=False)
    points = plot.groups(table)
    fast = points[points["recipe"] == "cnn_fast"].iloc[0]
    assert fast["n"] == 2 and fast["acc"] == pytest.approx(92.8) and fast["seconds"] == 42.0
    assert fast["acc_std"] == pytest.approx(100 * statistics.stdev([0.926, 0.930]))
    path = plot.main([str(tmp_path / "bench.csv"), "--out", str(tmp_path / "frontier.png")])
    assert path.read_bytes().startswith(b"\x89PNG")
    out = tmp_path / "without_cnn.png"
    plot.main([str(tmp_path / "bench.csv"), "--out", str(out), "--exclude", "cnn"])
    assert out.read_bytes().startswith(b"\x89PNG") and out.read_bytes() != path.read_bytes()


def test_overhead_variants_take_the_same_steps(
    script, tiny_args: list[str], tmp_path: Path
) -> None:
    """bench_overhead's three Lightning fits: the shipped one, the same less the fault-tolerance
    callbacks, and Lightning's textbook loop (Lightning's own callbacks only), each stepping the
    optimizer once per batch."""
    bench = script("bench_overhead")
    steps, callbacks = {}, {}
    for variant in bench.VARIANTS:
        trainer, model, data = bench.lightning_fit(
            [f"--config={bench.CONFIG}", *tiny_args], str(tmp_path), variant
        )
        trainer.fit(model, data)
        steps[variant] = trainer.global_step
        callbacks[variant] = {type(callback) for callback in trainer.callbacks}
    assert steps["shipped"] == 2 * trainer.num_training_batches > 0
    assert len(set(steps.values())) == 1
    assert set(bench.FAULT_TOLERANCE) <= callbacks["shipped"]
    assert not set(bench.FAULT_TOLERANCE) & callbacks["without fault tolerance"]
    assert callbacks["without fault tolerance"] == callbacks["shipped"] - set(bench.FAULT_TOLERANCE)
    textbook = callbacks["textbook Lightning"]
    assert textbook and all(c.__module__.startswith("lightning.") for c in textbook)
    assert model.automatic_optimization and isinstance(model, bench.TextbookModule)


def test_muon_bench_orthogonalizes_each_recipes_muon_weights(script) -> None:
    bench = script("bench_muon")
    grads = bench.recipe_gradients("cnn_fast")
    assert len(grads) >= 4 and all(g.ndim == 2 for g in grads)
    assert grads[0].shape[1] == 9  # the stem's (O, 1 x 3 x 3) weight, as Muon sees it
    assert bench.step_seconds(grads, torch.float32, repeats=1) > 0


NEEDS_BENCH_EXTRA = {"ood_eval"}  # scikit-learn, installed by `make bench`, not by the tests


@pytest.mark.parametrize("name", sorted({p.stem for p in SCRIPTS.glob("*.py")} - NEEDS_BENCH_EXTRA))
def test_every_script_imports(script, name: str) -> None:
    """A script's imports from the package and from its siblings still resolve after a refactor."""
    assert script(name).__doc__


@pytest.mark.slow  # an ONNX export and every int8 variant of it
def test_export_bench_tables_the_checkpoint_and_each_int8_format(
    script, mlp_fit, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    bench = script("bench_export")
    monkeypatch.setattr(bench, "BATCH_SIZES", (1, 8))  # the tiny test split has 100 images
    threads = str(torch.get_num_threads())
    variants = "qdq-pc,qdq-pc-8bit"
    bench.main(
        [
            f"--ckpt_path={mlp_fit.best}",
            "--seconds=0.02",
            f"--threads={threads}",
            f"--variants={variants}",
        ]
    )
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines() if "%" in line]
    assert [row[0] for row in rows] == [
        "| checkpoint (torch)",
        "| ONNX float32",
        "| ONNX int8 (qdq-pc)",
        "| ONNX int8 (qdq-pc-8bit)",
    ]
    assert rows[0][1] == rows[1][1]  # the float32 export scores what the checkpoint scores
    assert all(len(row) == 5 for row in rows)  # accuracy, size, two speeds
