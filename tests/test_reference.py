"""The NumPy reference network: parity with the PyTorch MLP in float64, gradient check, errors."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import FittedRun

from fashion_lightning import reference
from fashion_lightning.errors import FashionLightningError
from fashion_lightning.models import MLP
from fashion_lightning.reference.__main__ import main as reference_main

SHAPES = [(12, [], 3), (20, [16], 4), (30, [32, 16], 10), (16, [8, 8, 8], 5)]
TOL = 1e-10


def twins(in_features: int, hidden: list[int], classes: int, seed: int):
    """A NumPy MLP and a float64 torch MLP holding the same weights."""
    net = reference.MLP((in_features, *hidden, classes), seed=seed, dtype=np.float64)
    torch_net = MLP(classes, hidden, dropout=0.0, in_features=in_features).double()
    with torch.no_grad():
        for layer, (w, b) in zip(torch_net.linears, net.get_weights()):
            layer.weight.copy_(torch.from_numpy(w))
            layer.bias.copy_(torch.from_numpy(b))
    return net, torch_net


def batch(in_features: int, classes: int, seed: int, n: int = 9):
    rng = np.random.default_rng(seed + 100)
    return rng.standard_normal((n, in_features)), rng.integers(0, classes, n)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(("in_features", "hidden", "classes"), SHAPES)
def test_logits_loss_and_gradients_match_torch(in_features, hidden, classes, seed) -> None:
    net, torch_net = twins(in_features, hidden, classes, seed)
    x, y = batch(in_features, classes, seed)
    logits = net.forward(x)
    loss, grad = reference.softmax_cross_entropy(logits, y)
    net.backward(grad)

    torch_logits = torch_net(torch.from_numpy(x))
    torch_loss = F.cross_entropy(torch_logits, torch.from_numpy(y))
    torch_loss.backward()
    assert np.abs(logits - torch_logits.detach().numpy()).max() <= TOL
    assert abs(loss - torch_loss.item()) <= TOL
    for layer, torch_layer in zip(net.linears, torch_net.linears):
        assert np.abs(layer.dW - torch_layer.weight.grad.numpy()).max() <= TOL
        assert np.abs(layer.db - torch_layer.bias.grad.numpy()).max() <= TOL


OPTIMIZERS = {
    "sgd-momentum": (
        lambda p: reference.SGD(p, lr=0.05, momentum=0.9),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
    ),
    "sgd-plain": (lambda p: reference.SGD(p, lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
    "adam": (lambda p: reference.Adam(p, lr=0.01), lambda p: torch.optim.Adam(p, lr=0.01)),
}


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize(("in_features", "hidden", "classes"), SHAPES[1:3])
def test_parameters_match_torch_after_k_steps(optimizer, in_features, hidden, classes) -> None:
    net, torch_net = twins(in_features, hidden, classes, seed=3)
    make_ours, make_torch = OPTIMIZERS[optimizer]
    ours, theirs = make_ours(net.params()), make_torch(torch_net.parameters())
    for step in range(5):
        x, y = batch(in_features, classes, seed=step)
        net.backward(reference.softmax_cross_entropy(net.forward(x), y)[1])
        ours.step()
        theirs.zero_grad()
        F.cross_entropy(torch_net(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        theirs.step()
    for (w, b), layer in zip(net.get_weights(), torch_net.linears):
        assert np.abs(w - layer.weight.detach().numpy()).max() <= TOL
        assert np.abs(b - layer.bias.detach().numpy()).max() <= TOL


def test_gradients_match_finite_differences() -> None:
    net = reference.MLP((6, 5, 4, 3), seed=0, dtype=np.float64)
    x, y = batch(6, 3, seed=0, n=4)
    net.backward(reference.softmax_cross_entropy(net.forward(x), y)[1])
    eps = 1e-6
    for param, grad in net.params():
        for i in np.ndindex(param.shape):
            saved = param[i]
            param[i] = saved + eps
            up = reference.softmax_cross_entropy(net.forward(x), y)[0]
            param[i] = saved - eps
            down = reference.softmax_cross_entropy(net.forward(x), y)[0]
            param[i] = saved
            assert abs((up - down) / (2 * eps) - grad[i]) < 1e-7


def test_dropout_is_inverted_and_off_in_evaluation() -> None:
    layer = reference.Dropout(0.5, np.random.default_rng(0))
    x = np.ones((2000, 50))
    layer.training = True
    out = layer.forward(x)
    assert set(np.unique(out)) == {0.0, 2.0} and abs(out.mean() - 1) < 0.02
    assert np.array_equal(layer.backward(x), out)
    layer.training = False
    assert np.array_equal(layer.forward(x), x)


def test_softmax_cross_entropy_is_stable_for_huge_logits() -> None:
    loss, grad = reference.softmax_cross_entropy(
        np.array([[1000.0, 0.0], [0.0, 1000.0]]), np.array([0, 0])
    )
    assert np.isfinite(loss) and np.isfinite(grad).all() and loss == pytest.approx(500.0)


@pytest.mark.parametrize(
    ("x", "y", "words"),
    [
        (np.zeros((4, 10)), np.zeros(4, int), "shape (N, 784)"),
        (np.full((4, 784), np.nan), np.zeros(4, int), "NaN"),
        (np.zeros((4, 784)), np.full(4, 10), "Labels must lie"),
    ],
)
def test_bad_inputs_are_refused(x, y, words) -> None:
    with pytest.raises(FashionLightningError, match=words.replace("(", r"\(").replace(")", r"\)")):
        reference.evaluate(reference.MLP(), x, y)


def test_trains_on_its_own_and_writes_metrics_json(fake_data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "metrics.json"
    reference_main(
        [
            "--data-dir",
            str(fake_data_dir),
            "--epochs",
            "3",
            "--batch-size",
            "16",
            "--hidden",
            "32",
            "--metrics-json",
            str(out),
        ]
    )
    metrics = json.loads(out.read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3]
    assert metrics["history"][-1]["train_loss"] < metrics["history"][0]["train_loss"]
    assert metrics["test_acc"] == metrics["history"][-1]["test_acc"] > 0.3


def test_evaluates_a_lightning_checkpoint_to_the_same_accuracy(
    mlp_fit: FittedRun, fake_data_dir, capsys
) -> None:
    lightning_acc = mlp_fit.metrics["test/acc"]
    result = reference_main(
        ["--evaluate-checkpoint", str(mlp_fit.best), "--data-dir", str(fake_data_dir)]
    )
    assert result["test_acc"] == pytest.approx(lightning_acc, abs=1e-9)
    assert f"Test accuracy: {lightning_acc:.2%}" in capsys.readouterr().out


def test_refuses_a_cnn_checkpoint_and_other_sizes(mlp_fit: FittedRun, cnn_fit: FittedRun) -> None:
    cases = [
        (["--evaluate-checkpoint", str(cnn_fit.best)], "CNN"),
        (["--evaluate-checkpoint", str(mlp_fit.best), "--hidden", "64"], "hidden sizes [256, 128]"),
        (["--evaluate-checkpoint", "missing.ckpt"], "does not exist"),
    ]
    for argv, words in cases:
        with pytest.raises(SystemExit) as exit_info:
            reference_main(argv)
        assert words in str(exit_info.value.code)
