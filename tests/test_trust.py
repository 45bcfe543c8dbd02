"""Trusting the answer: the temperature fit, the ECE, the out-of-domain flag, the checkpoints that
carry them, and a checkpoint written before they existed, through every command."""

import math
from pathlib import Path

import numpy as np
import onnxruntime
import pandas as pd
import pytest
import torch
from conftest import FittedRun, predictions_folder

from fashion_lightning import models, serve_api
from fashion_lightning.calibration import calibration_error, fit_temperature, reliability
from fashion_lightning.checkpoint import load_model
from fashion_lightning.cli import cli_main
from fashion_lightning.inference import ProbabilityModel
from fashion_lightning.ood import FLAG_RATE, MahalanobisScore, split_head
from fashion_lightning.trust import TRUST_KEY


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


def test_mahalanobis_flags_a_far_batch_and_few_of_its_own_kind() -> None:
    generator = torch.Generator().manual_seed(0)
    centres = 5 * torch.randn(3, 8, generator=generator)
    labels = torch.arange(3000) % 3
    train = centres[labels] + torch.randn(3000, 8, generator=generator)
    val = centres[labels[:1000]] + torch.randn(1000, 8, generator=generator)
    test = centres[labels[:1000]] + torch.randn(1000, 8, generator=generator)
    far = 8 + torch.randn(200, 8, generator=generator)  # away from every class
    score = MahalanobisScore.fit(train, labels, val, num_classes=3)
    assert ((score(val) > 1).float().mean()).item() == pytest.approx(FLAG_RATE, abs=0.01)
    assert (score(test) > 1).float().mean() < 2 * FLAG_RATE
    assert (score(far) > 1).all()


def test_fit_writes_the_temperature_and_ood_fit_into_best_and_last(fitted: Path) -> None:
    for path in (fitted, fitted.parent / "last.ckpt"):
        trust = torch.load(path, weights_only=True)[TRUST_KEY]
        assert trust["temperature"] > 0 and trust["temperature"] != 1.0
        assert trust["val_ece_after"] <= trust["val_ece_before"]
        assert set(trust["ood"]) == {"threshold"} and torch.isfinite(trust["ood"]["threshold"])
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
    out = cli_main(["report", f"--ckpt_path={fitted}", "--robustness=true"])
    table = pd.read_csv(out / "robustness.csv")
    assert list(table.columns) == ["corruption", "severity", "accuracy"]
    assert len(table) == 1 + 13 * 3 and table["accuracy"].between(0, 1).all()
    assert set(table["severity"]) == {0, 1, 2, 3}
    flips = table[table["corruption"] == "horizontal_flip"]["accuracy"]
    assert not math.isnan(flips.mean())
    assert (out / "robustness.png").stat().st_size > 0
    assert "## Accuracy under corruption" in (out / "report.md").read_text()
