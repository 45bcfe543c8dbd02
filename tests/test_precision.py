"""Precision chosen by the hardware, and an explicit --trainer.precision kept."""

import pytest
from conftest import FittedRun, config

from fashion_lightning.cli.lightning import make_cli
from fashion_lightning.cli.main import cli_main
from fashion_lightning.training.precision import Capabilities, resolve_precision

NO_GPU = dict(cuda=False, cuda_bf16=False, cuda_name="")
AMX_CPU = Capabilities(**NO_GPU, cpu_avx512_bf16=True, cpu_amx=True, cpu_capability="AVX512")
AVX2_CPU = Capabilities(**NO_GPU, cpu_avx512_bf16=False, cpu_amx=False, cpu_capability="AVX2")
BF16_CPU = Capabilities(**NO_GPU, cpu_avx512_bf16=True, cpu_amx=False, cpu_capability="AVX512")
H100 = Capabilities(True, True, "NVIDIA H100", False, False, "AVX2")
V100 = Capabilities(True, False, "Tesla V100", False, False, "AVX2")


@pytest.mark.parametrize(
    ("accelerator", "caps", "expected"),
    [
        ("auto", AMX_CPU, "bf16-mixed"),
        ("cpu", BF16_CPU, "bf16-mixed"),
        ("auto", AVX2_CPU, "32-true"),  # bf16 would be emulated: ~80x slower
        ("auto", H100, "bf16-mixed"),
        ("gpu", V100, "16-mixed"),
        ("cpu", H100, "32-true"),  # the GPU is there but not used
        ("mps", AMX_CPU, "32-true"),
    ],
)
def test_resolver_picks_by_capability(accelerator, caps, expected) -> None:
    precision, reason = resolve_precision(accelerator, caps)
    assert precision == expected and reason


def test_the_reason_names_what_decided() -> None:
    assert "AMX" in resolve_precision("auto", AMX_CPU)[1]
    assert "AVX2" in resolve_precision("auto", AVX2_CPU)[1]
    assert "V100" in resolve_precision("auto", V100)[1]


def test_unset_precision_is_resolved_and_announced(tiny_args, caplog) -> None:
    args = [a for a in tiny_args if not a.startswith("--trainer.precision")]
    cli = cli_main(["fit", config("mlp"), *args, "--trainer.fast_dev_run=1"])
    expected, _ = resolve_precision("auto", Capabilities.detect())
    assert cli.trainer.precision == expected
    assert f"Precision: {expected}" in caplog.text


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_an_explicit_precision_wins(tiny_args, precision: str, caplog) -> None:
    args = [a for a in tiny_args if not a.startswith("--trainer.precision")]
    cli = cli_main(
        [
            "fit",
            config("mlp"),
            *args,
            "--trainer.fast_dev_run=1",
            f"--trainer.precision={precision}",
        ]
    )
    assert cli.trainer.precision == precision
    assert "Precision:" not in caplog.text


def test_evaluation_stays_float32_unless_told(mlp_run: FittedRun, tiny_args) -> None:
    """validate/test/predict give the numbers report, export and serve give: float32."""
    args = [a for a in tiny_args if not a.startswith("--trainer.precision")]
    test = cli_main(["test", f"--ckpt_path={mlp_run.best}", *args])
    assert test.trainer.precision == "32-true"


@pytest.mark.parametrize("caps", [BF16_CPU, AVX2_CPU], ids=["bf16 CPU", "AVX2 CPU"])
def test_tunes_trials_train_in_the_precision_fit_picks(
    tiny_args, caps: Capabilities, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    """A CLI built without a subcommand builds a fit (tune's trials, the benchmarks): it picks
    the precision as `fit` does, so `best.yaml` is chosen at the precision it trains at."""
    monkeypatch.setattr(Capabilities, "detect", classmethod(lambda cls: caps))
    args = [a for a in tiny_args if not a.startswith("--trainer.precision")]
    expected, _ = resolve_precision("auto", caps)
    trial = make_cli([config("mlp"), *args], run=False)
    assert trial.trainer.precision == expected
    assert f"Precision: {expected}" in caplog.text
