"""A multilayer perceptron written from scratch in NumPy: forward, softmax cross-entropy, backprop,
SGD with momentum and Adam, all by hand. No torch in here.

It is for reading, and for proof: the parity tests give it and `models.MLP` the same weights and the
same batch, and check that logits, loss, gradients and optimizer steps agree to 1e-10 in float64.
Each layer's backward sits right beside its forward (as in karpathy's micrograd). Shapes: B is the
batch size, I and O a layer's input and output widths.

Train it on its own:  python -m fashion_lightning.reference --hidden 256 128 --epochs 10
Evaluate a Lightning MLP checkpoint with it:  python -m fashion_lightning.reference
    --evaluate-checkpoint lightning_logs/version_0/checkpoints/last.ckpt
"""

import argparse
import json
import math
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from fashion_lightning import idx
from fashion_lightning.atomic import atomic_path
from fashion_lightning.errors import FashionLightningError, paragraph

Weights = list[tuple[np.ndarray, np.ndarray]]  # [(W (O, I), b (O,)), ...] input side first


class Linear:
    """y = x W^T + b, with W stored (out, in) as torch.nn.Linear stores it."""

    def __init__(self, fan_in: int, fan_out: int, rng: np.random.Generator, dtype=np.float32):
        # He initialisation: variance 2 / fan_in keeps activations' scale steady through ReLUs.
        self.W = (rng.standard_normal((fan_out, fan_in)) * math.sqrt(2.0 / fan_in)).astype(dtype)
        self.b = np.zeros(fan_out, dtype=dtype)
        self.dW, self.db = np.zeros_like(self.W), np.zeros_like(self.b)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x  # (B, I), kept for the backward pass
        return x @ self.W.T + self.b  # (B, O)

    def backward(self, grad: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        """dL/dy (B, O) -> dL/dx (B, I); writes dL/dW (O, I) and dL/db (O,) in place, where the
        optimizer holds them. The first layer skips dL/dx: nothing needs the gradient of the
        images, and it would cost as much as the layer's forward pass."""
        np.matmul(grad.T, self.x, out=self.dW)
        np.sum(grad, axis=0, out=self.db)
        return grad @ self.W if input_grad else None

    def params(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(self.W, self.dW), (self.b, self.db)]


class ReLU:
    def forward(self, x: np.ndarray) -> np.ndarray:
        self.mask = x > 0
        return np.maximum(x, 0)

    def backward(self, grad: np.ndarray) -> np.ndarray:
        return grad * self.mask  # the gradient flows only where the input was positive

    def params(self) -> list:
        return []


class Dropout:
    """Zero each activation with probability p in training and scale the rest by 1 / (1 - p), so
    evaluation needs no rescaling (inverted dropout, as torch.nn.Dropout)."""

    def __init__(self, p: float, rng: np.random.Generator):
        self.p, self.rng, self.training = p, rng, False

    def forward(self, x: np.ndarray) -> np.ndarray:
        if not self.training or self.p == 0:
            self.mask = None
            return x
        self.mask = (self.rng.random(x.shape) >= self.p).astype(x.dtype) / (1 - self.p)
        return x * self.mask

    def backward(self, grad: np.ndarray) -> np.ndarray:
        return grad if self.mask is None else grad * self.mask

    def params(self) -> list:
        return []


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of softmax(logits) against integer labels, and dL/dlogits.

    log softmax(z)_k = z_k - logsumexp(z); subtracting max(z) first keeps exp() from overflowing.
    The gradient of the mean loss is (softmax(z) - onehot(y)) / B.
    """
    shifted = logits - logits.max(axis=1, keepdims=True)  # (B, C)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    batch = np.arange(len(labels))
    loss = -log_probs[batch, labels].mean()
    grad = np.exp(log_probs)
    grad[batch, labels] -= 1.0
    return float(loss), grad / len(labels)


class MLP:
    """[Linear -> ReLU -> Dropout] per hidden layer, then Linear: the layout of `models.MLP`."""

    def __init__(
        self,
        sizes: Sequence[int] = (784, 256, 128, 10),
        dropout: float = 0.0,
        seed: int = 0,
        dtype=np.float32,
    ):
        rng = np.random.default_rng(seed)
        self.sizes, self.dtype = tuple(sizes), dtype
        self.layers: list = []
        for fan_in, fan_out in zip(sizes[:-2], sizes[1:-1]):
            self.layers += [Linear(fan_in, fan_out, rng, dtype), ReLU(), Dropout(dropout, rng)]
        self.layers.append(Linear(sizes[-2], sizes[-1], rng, dtype))

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """(B, 784) -> logits (B, C)."""
        for layer in self.layers:
            layer.training = training
            x = layer.forward(x)
        return x

    def backward(self, grad: np.ndarray) -> None:
        """Back-propagate dL/dlogits (B, C) through every layer, filling each parameter's grad."""
        for layer in reversed(self.layers[1:]):
            grad = layer.backward(grad)
        self.layers[0].backward(grad, input_grad=False)

    def params(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(parameter, gradient) pairs in a fixed order; optimizers update parameters in place."""
        return [pair for layer in self.layers for pair in layer.params()]

    @property
    def linears(self) -> list[Linear]:
        return [layer for layer in self.layers if isinstance(layer, Linear)]

    def get_weights(self) -> Weights:
        return [(layer.W.copy(), layer.b.copy()) for layer in self.linears]

    def set_weights(self, weights: Weights) -> None:
        """Copy in [(W, b), ...] of the same sizes, e.g. from a PyTorch MLP's Linear layers."""
        sizes = layer_sizes(weights)
        if tuple(sizes) != self.sizes:
            raise FashionLightningError(
                f"The weights have layer sizes {sizes} but this NumPy MLP has {list(self.sizes)}. "
                f"Build it with the checkpoint's sizes (omit --hidden to take them from it)."
            )
        for layer, (w, b) in zip(self.linears, weights):
            layer.W[...], layer.b[...] = w, b


def layer_sizes(weights: Weights) -> list[int]:
    """[inputs, hidden..., outputs] of a list of (W (O, I), b) pairs."""
    return [weights[0][0].shape[1]] + [w.shape[0] for w, _ in weights]


class SGD:
    """torch.optim.SGD's update: v <- momentum v + g (v = g on the first step); p <- p - lr v."""

    def __init__(self, params, lr: float = 0.01, momentum: float = 0.0, weight_decay: float = 0.0):
        self.params, self.lr, self.momentum, self.weight_decay = params, lr, momentum, weight_decay
        self.velocity: list[np.ndarray | None] = [None] * len(params)

    def step(self) -> None:
        for i, (p, g) in enumerate(self.params):
            g = g + self.weight_decay * p if self.weight_decay else g
            if self.momentum:
                v = self.velocity[i]
                self.velocity[i] = g.copy() if v is None else self.momentum * v + g
                g = self.velocity[i]
            p -= self.lr * g


class Adam:
    """torch.optim.Adam's update with bias correction:
    m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;
    p <- p - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params, self.lr, (self.b1, self.b2), self.eps = params, lr, betas, eps
        self.m = [np.zeros_like(p) for p, _ in params]
        self.v = [np.zeros_like(p) for p, _ in params]
        self.t = 0

    def step(self) -> None:
        self.t += 1
        correction1, correction2 = 1 - self.b1**self.t, 1 - self.b2**self.t
        for (p, g), m, v in zip(self.params, self.m, self.v):
            m *= self.b1
            m += (1 - self.b1) * g
            v *= self.b2
            v += (1 - self.b2) * g * g
            p -= (self.lr / correction1) * m / (np.sqrt(v / correction2) + self.eps)


class CosineDecay:
    """Wraps an optimizer so that its learning rate falls from the initial value to 0 along half a
    cosine over `total_steps`: large steps early, fine ones at the end."""

    def __init__(self, optimizer, total_steps: int):
        self.optimizer, self.total, self.base_lr, self.t = optimizer, total_steps, optimizer.lr, 0

    def step(self) -> None:
        self.optimizer.lr = 0.5 * self.base_lr * (1 + math.cos(math.pi * self.t / self.total))
        self.t += 1
        self.optimizer.step()


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

    from fashion_lightning.checkpoint import load_model  # imports torch
    from fashion_lightning.models import MLP as TorchMLP

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


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fashion_lightning.reference", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--hidden", type=int, nargs="*", default=[256, 128], help="hidden widths")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    parser.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    parser.add_argument("--lr-decay", choices=["cosine", "none"], default="cosine")
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None, help="folder with the IDX files")
    parser.add_argument("--metrics-json", type=Path, help="write history and test_acc here")
    parser.add_argument("--evaluate-checkpoint", type=Path, help="a Lightning MLP .ckpt to test")
    args = parser.parse_args(argv)
    given = sys.argv[1:] if argv is None else argv
    args.hidden_given = any(a.startswith("--hidden") for a in given)
    if args.epochs < 1 or args.batch_size < 1 or args.lr <= 0 or not 0 <= args.dropout < 1:
        parser.error("--epochs and --batch-size must be positive, --lr > 0, 0 <= --dropout < 1")
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    try:
        result = evaluate_checkpoint(args) if args.evaluate_checkpoint else train(args)
        if args.metrics_json:
            write_json(result, args.metrics_json)
    except FashionLightningError as error:
        sys.exit(paragraph(str(error)))
    return result


if __name__ == "__main__":
    main()
