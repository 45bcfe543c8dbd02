"""Training and evaluating the NumPy MLP on Fashion-MNIST: minibatches, epochs, the test set, and
a Lightning MLP checkpoint's weights evaluated by the NumPy network."""

import argparse
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from fashion_lightning.atomic import atomic_path
from fashion_lightning.data import idx
from fashion_lightning.errors import FashionLightningError
from fashion_lightning.reference.network import (
    MLP,
    SGD,
    Adam,
    CosineDecay,
    Weights,
    layer_sizes,
    softmax_cross_entropy,
)


def check_inputs(net: MLP, x: np.ndarray, y: np.ndarray) -> None:
    """Refuse, in one clear paragraph, inputs the network cannot take."""
    if x.ndim != 2 or x.shape[1] != net.sizes[0] or len(x) != len(y) or y.ndim != 1:
        raise FashionLightningError(
            f"The NumPy MLP takes inputs of shape (N, {net.sizes[0]}) with N labels; got inputs "
            f"{x.shape} and labels {y.shape}. Flatten images with x.reshape(len(x), -1)."
        )
    if not np.isfinite(x).all():
        raise FashionLightningError(
            f"The inputs hold {np.size(x) - np.isfinite(x).sum()} NaN or infinite values; clean or "
            f"drop those samples before training or evaluating."
        )
    if len(y) and (y.min() < 0 or y.max() >= net.sizes[-1]):
        raise FashionLightningError(
            f"Labels must lie in [0, {net.sizes[-1] - 1}]; got values from {y.min()} to {y.max()}."
        )


def batches(n: int, batch_size: int, rng: np.random.Generator | None) -> Iterator[np.ndarray]:
    """Index arrays of minibatches, shuffled when an rng is given."""
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def train_epoch(net: MLP, optimizer, x, y, batch_size: int, rng, progress=None) -> dict:
    """One pass over (x, y) in shuffled minibatches; mean loss and accuracy over the pass."""
    total_loss, correct = 0.0, 0
    for index in batches(len(y), batch_size, rng):
        logits = net.forward(x[index], training=True)
        loss, grad = softmax_cross_entropy(logits, y[index])
        net.backward(grad)
        optimizer.step()
        total_loss += loss * len(index)
        correct += int((logits.argmax(axis=1) == y[index]).sum())
        if progress is not None:
            progress.update(1)
    return {"loss": total_loss / len(y), "acc": correct / len(y)}


def evaluate(net: MLP, x: np.ndarray, y: np.ndarray, batch_size: int = 1000) -> dict:
    """Mean loss and accuracy, in evaluation mode (no dropout)."""
    check_inputs(net, x, y)
    total_loss, correct = 0.0, 0
    for index in batches(len(y), batch_size, None):
        logits = net.forward(x[index])
        total_loss += softmax_cross_entropy(logits, y[index])[0] * len(index)
        correct += int((logits.argmax(axis=1) == y[index]).sum())
    return {"loss": total_loss / len(y), "acc": correct / len(y)}


def load_inputs(folder: Path, split: str, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Flattened, normalized images (N, 784) and int64 labels, as the DataModule feeds the MLP."""
    images, labels = idx.load_split(folder, split)
    x = images.reshape(len(images), -1).astype(dtype) / 255
    return (x - dtype(idx.PIXEL_MEAN)) / dtype(idx.PIXEL_STD), labels.astype(np.int64)


def mlp_weights_from_checkpoint(path: str | Path) -> Weights:
    """[(W, b), ...] of a Lightning `models.MLP` checkpoint, rebuilt the one way every command
    rebuilds a model (`checkpoint.load_model`). That needs torch, so torch is imported here, never by
    the network above."""
    from torch import nn

    from fashion_lightning.models import MLP as TorchMLP
    from fashion_lightning.training.checkpoint import load_model  # imports torch

    net = load_model(path, option="--evaluate-checkpoint").net
    if not isinstance(net, TorchMLP):
        raise FashionLightningError(
            f"--evaluate-checkpoint {path} does not hold a fashion_lightning.models.MLP but a "
            f"{type(net).__module__}.{type(net).__name__}; the NumPy reference can only evaluate "
            f"MLP checkpoints, e.g. from `python -m fashion_lightning fit --config configs/mlp.yaml`."
        )
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    return [(m.weight.detach().double().numpy(), m.bias.detach().double().numpy()) for m in linears]


def train(args: argparse.Namespace) -> dict:
    """Train from scratch on the real training set; report per-epoch history and test accuracy."""
    from tqdm import tqdm  # a progress bar, nothing else: tqdm does not import torch

    folder = idx.find_data_dir(args.data_dir, download=False)
    x_train, y_train = load_inputs(folder, "train")
    x_test, y_test = load_inputs(folder, "test")
    net = MLP((784, *args.hidden, 10), dropout=args.dropout, seed=args.seed)
    check_inputs(net, x_train, y_train)
    if args.optimizer == "adam":
        optimizer = Adam(net.params(), lr=args.lr)
    else:
        optimizer = SGD(net.params(), lr=args.lr, momentum=args.momentum)
    rng, history = np.random.default_rng(args.seed), []
    steps = math.ceil(len(y_train) / args.batch_size)
    if args.lr_decay == "cosine":
        optimizer = CosineDecay(optimizer, steps * args.epochs)
    for epoch in range(1, args.epochs + 1):
        start = time.perf_counter()
        with tqdm(total=steps, desc=f"epoch {epoch}/{args.epochs}", leave=False) as progress:
            fit = train_epoch(net, optimizer, x_train, y_train, args.batch_size, rng, progress)
        seconds = time.perf_counter() - start
        test = evaluate(net, x_test, y_test)
        history.append(
            {
                "epoch": epoch,
                "train_loss": fit["loss"],
                "train_acc": fit["acc"],
                "test_loss": test["loss"],
                "test_acc": test["acc"],
                "seconds": seconds,
            }
        )
        print(
            f"epoch {epoch:3d}  train loss {fit['loss']:.4f} acc {fit['acc']:.2%}  "
            f"test loss {test['loss']:.4f} acc {test['acc']:.2%}  ({seconds:.1f} s)"
        )
    print(f"Test accuracy: {history[-1]['test_acc']:.2%}")
    return {"config": vars(args), "history": history, "test_acc": history[-1]["test_acc"]}


def evaluate_checkpoint(args: argparse.Namespace) -> dict:
    """Test accuracy of a Lightning MLP checkpoint computed by the NumPy network."""
    weights = mlp_weights_from_checkpoint(args.evaluate_checkpoint)
    sizes = layer_sizes(weights)
    if args.hidden_given and list(args.hidden) != sizes[1:-1]:
        raise FashionLightningError(
            f"--hidden {' '.join(map(str, args.hidden))} does not match the checkpoint's hidden "
            f"sizes {sizes[1:-1]}; omit --hidden to take them from the checkpoint."
        )
    net = MLP(sizes, dtype=np.float64)
    net.set_weights(weights)
    folder = idx.find_data_dir(args.data_dir, download=False)
    test = evaluate(net, *load_inputs(folder, "test", np.float64))
    print(f"Test accuracy: {test['acc']:.2%}  (NumPy reference, {args.evaluate_checkpoint})")
    return {
        "checkpoint": str(args.evaluate_checkpoint),
        "test_acc": test["acc"],
        "test_loss": test["loss"],
    }


def write_json(data: dict, path: Path) -> None:
    """Write atomically: a reader never sees half a file."""
    try:
        with atomic_path(path) as partial:
            partial.write_text(json.dumps(data, indent=2, default=str))
    except OSError as e:
        raise FashionLightningError(
            f"--metrics-json {path}: cannot write it ({e.strerror}). Name a file in a folder you "
            f"can write to, e.g. --metrics-json reference.json."
        ) from None
