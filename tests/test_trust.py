"""Trusting the answer: the temperature fit, the ECE, the out-of-domain flag, the checkpoints that
carry them, and a checkpoint written before they existed, through every command."""

import math
from pathlib import Path

import numpy as np
import onnxruntime
import pandas as pd
import pytest
import torch
from conftest import FittedRun, config, predictions_folder

from fashion_lightning import models
from fashion_lightning.cli.main import cli_main
from fashion_lightning.deploy import serve_api
from fashion_lightning.evaluation.calibration import (
    T_MAX,
    T_MIN,
    calibration_error,
    fit_temperature,
    reliability,
)
from fashion_lightning.evaluation.inference import ProbabilityModel
from fashion_lightning.evaluation.ood import (
    FLAG_RATE,
    EnergyMahalanobisScore,
    EnergyScore,
    MahalanobisScore,
    ood_score_of,
    split_head,
)
from fashion_lightning.evaluation.trust import TRUST_KEY, at_bound, splits_seen
from fashion_lightning.training.checkpoint import load_model


@pytest.fixture
def fitted(cnn_fit: FittedRun, run_dir: Path) -> Path:
    """The session's tiny CNN fit with flip TTA (validated every epoch), copied into the test's
    run folder; its best checkpoint."""
    return cnn_fit.moved_to(run_dir).best


@pytest.mark.parametrize("true_t", [0.5, 2.0])
def test_fit_temperature_recovers_the_temperature_that_made_the_labels(true_t: float) -> None:
    generator = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(20000, 10, generator=generator)
    labels = torch.multinomial((logits / true_t).softmax(-1), 1, generator=generator)[:, 0]
    assert fit_temperature(logits, labels) == pytest.approx(true_t, rel=0.05)


def test_fit_temperature_stops_at_its_bound_when_every_label_is_right() -> None:
    # Perfectly separated: the NLL falls for ever as T -> 0, so only the bound can stop it.
    logits = 5 * torch.eye(10).repeat(100, 1)
    labels = torch.arange(10).repeat(100)
    assert fit_temperature(logits, labels) == T_MIN


def test_calibration_error_equals_the_hand_computation() -> None:
    # Two predictions at confidence 0.9 (one right), one at 0.6 (right), in 15 bins:
    # |0.9 - 0.5| * 2/3 + |0.6 - 1| * 1/3 = 0.4
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6]])
    labels = torch.tensor([0, 1, 1])
    assert calibration_error(probs, labels) == pytest.approx(0.4, abs=1e-6)
    confidence, accuracy, count = reliability(probs, labels)
    assert count.sum() == 3 and count[13] == 2 and count[9] == 1  # 0.9 -> bin 13, 0.6 -> bin 9
    assert accuracy[13] == 0.5 and confidence[9] == pytest.approx(0.6)


@pytest.mark.parametrize("net", [models.MLP(), models.CNN(), models.ResNet(depth=10, width=1)])
def test_split_head_gives_the_networks_own_output(net: torch.nn.Module) -> None:
    net.eval()
    body, head = split_head(net)
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        features = body(x)
        assert features.shape == (3, head.in_features)
        torch.testing.assert_close(head(features), net(x))
    assert any(isinstance(m, torch.nn.Linear) for m in net.modules())  # the net is untouched
    assert head.weight is [m for m in net.modules() if isinstance(m, torch.nn.Linear)][-1].weight


def clusters(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n features (n, 8) around 3 class centres fixed by the seed, and their labels (n,)."""
    centres = 5 * torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(n) % 3
    return centres[labels] + torch.randn(n, 8, generator=generator), labels


def test_mahalanobis_flags_a_far_batch_and_few_of_its_own_kind() -> None:
    generator = torch.Generator().manual_seed(0)
    (train, labels), (val, _), (test, _) = (clusters(n, generator) for n in (3000, 1000, 1000))
    far = 8 + torch.randn(200, 8, generator=generator)  # away from every class
    score = MahalanobisScore.fit(train, labels, val, num_classes=3)
    assert ((score(val) > 1).float().mean()).item() == pytest.approx(FLAG_RATE, abs=0.01)
    assert (score(test) > 1).float().mean() < 2 * FLAG_RATE
    assert (score(far) > 1).all()


def test_the_pair_flags_what_either_score_flags_and_few_garments() -> None:
    """Features off the training data with confident logits (only Mahalanobis sees them), and
    features near a class with flat logits (only the energy sees them), are both flagged; the
    validation split is flagged at FLAG_RATE; and its state round-trips through a checkpoint."""
    generator = torch.Generator().manual_seed(0)
    (train, labels), (val, val_labels) = (clusters(n, generator) for n in (3000, 1000))
    val_logits = 4 * torch.nn.functional.one_hot(val_labels, 3) + torch.randn(1000, 3)
    score = EnergyMahalanobisScore.fit((train, labels), val, val_logits, 1.0, num_classes=3)
    t = torch.tensor(1.0)
    assert ((score(val, val_logits, t) > 1).float().mean()).item() == pytest.approx(
        FLAG_RATE, abs=0.01
    )
    far, confident = 8 + torch.randn(50, 8, generator=generator), val_logits[:50]
    near, flat = val[:50], torch.zeros(50, 3)
    assert (score(far, confident, t) > 1).all() and (score(near, flat, t) > 1).all()
    again = ood_score_of(score.state())
    torch.testing.assert_close(again(far, confident, t), score(far, confident, t))
    assert isinstance(ood_score_of({"threshold": torch.tensor(0.0)}), EnergyScore)  # older fits


def test_fit_writes_the_temperature_and_ood_fit_into_best_and_last(fitted: Path) -> None:
    for path in (fitted, fitted.parent / "last.ckpt"):
        trust = torch.load(path, weights_only=True)[TRUST_KEY]
        assert trust["temperature"] > 0 and trust["temperature"] != 1.0
        assert trust["val_ece_after"] <= trust["val_ece_before"]
        pair = {"energy_threshold", "means", "precision", "distance_threshold", "scale"}
        assert set(trust["ood"]) == pair
        assert all(torch.isfinite(v).all() for v in trust["ood"].values())
    model = load_model(fitted)
    assert model.temperature == torch.load(fitted, weights_only=True)[TRUST_KEY]["temperature"]


def test_blank_and_noise_images_are_flagged_not_clothing(fitted: Path) -> None:
    runner = ProbabilityModel(load_model(fitted))
    noise = torch.randint(0, 256, (8, 1, 28, 28), generator=torch.Generator().manual_seed(0))
    blank = torch.zeros(2, 1, 28, 28, dtype=torch.uint8)
    white = torch.full((2, 1, 28, 28), 255, dtype=torch.uint8)
    with torch.no_grad():
        _, scores = runner(torch.cat([noise.to(torch.uint8), blank, white]))
    assert (scores > 1).all(), scores


def test_an_old_checkpoint_without_trust_works_in_every_command(fitted: Path, tiny_args) -> None:
    """Written before calibration existed: T = 1, no ood score (NaN, never flagged), and every
    command still runs; report calls it uncalibrated."""
    checkpoint = torch.load(fitted, weights_only=True)
    del checkpoint[TRUST_KEY]
    old = fitted.with_name("old.ckpt")
    torch.save(checkpoint, old)
    tested = cli_main(["test", *tiny_args, f"--ckpt_path={old}"]).trainer.callback_metrics
    assert tested["test/ece"] == tested["test/ece_uncalibrated"]
    cli = cli_main(["predict", *tiny_args, f"--ckpt_path={old}"])
    table = pd.read_csv(predictions_folder(cli) / "predictions.csv")
    assert table["ood_score"].isna().all() and (table["verdict"] == "clothing").all()
    report = cli_main(["report", f"--ckpt_path={old}", f"--out={fitted.parent / 'old_report'}"])
    assert "**uncalibrated**" in (report / "report.md").read_text()
    assert (report / "calibration.png").stat().st_size > 0
    onnx = cli_main(["export", f"--ckpt_path={old}"])
    session = onnxruntime.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    images = np.zeros((2, 1, 28, 28), dtype=np.uint8)
    probs, ood = session.run(None, {"images": images})
    assert np.isnan(ood).all() and np.allclose(probs.sum(1), 1, atol=1e-5)
    answer = serve_api.prediction(probs[0].tolist(), float(ood[0]))
    assert answer["ood_score"] is None and answer["verdict"] == "clothing"


def test_report_robustness_writes_the_table_and_picture(fitted: Path) -> None:
    out = cli_main(["report", f"--ckpt_path={fitted}", "--robustness"])  # a bare switch
    table = pd.read_csv(out / "robustness.csv")
    assert list(table.columns) == ["corruption", "severity", "accuracy"]
    assert len(table) == 1 + 13 * 3 and table["accuracy"].between(0, 1).all()
    assert set(table["severity"]) == {0, 1, 2, 3}
    flips = table[table["corruption"] == "horizontal_flip"]["accuracy"]
    assert not math.isnan(flips.mean())
    assert (out / "robustness.png").stat().st_size > 0
    assert "## Accuracy under corruption" in (out / "report.md").read_text()


def test_calibration_uses_the_validation_batches_the_run_validates(tiny_args, run_dir) -> None:
    """A smoke run (`--trainer.limit_val_batches 1`) calibrates on that one batch, and on the
    training batches it trained on, not on the whole split."""
    sizes = [
        "--data.val_size=48",
        "--trainer.limit_val_batches=1",
        "--trainer.limit_train_batches=2",
    ]
    cli = cli_main(["fit", config("mlp"), *tiny_args, *sizes, "--trainer.limit_test_batches=1"])
    splits = cli.datamodule.splits
    seen = splits_seen(cli.trainer, splits)
    assert len(splits["val"][0]) == 48 and [len(t) for t in seen["val"]] == [16, 16]
    assert [len(t) for t in seen["train"]] == [2 * 16, 2 * 16]
    assert (seen["val"][0] == splits["val"][0][:16]).all()


@pytest.mark.parametrize(
    "temperature, accuracy, words",
    [
        (T_MAX, 0.45, ["45% validation accuracy", "Train longer"]),
        (T_MIN, 1.0, ["every one of the validation images", "--trainer.limit_val_batches"]),
        (T_MIN, 0.9, ["far less confident", "Train longer"]),
        (1.2, 0.9, []),
    ],
)
def test_a_temperature_at_its_bound_says_what_happened(temperature, accuracy, words) -> None:
    told = at_bound({"temperature": temperature, "val_acc": accuracy})
    assert all(word in told for word in words) and bool(told) == bool(words)
