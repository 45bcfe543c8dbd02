"""A multilayer perceptron written from scratch in NumPy: forward, softmax cross-entropy, backprop,
SGD with momentum and Adam, all by hand. No torch in here.

It is for reading, and for proof: the parity tests give it and `models.MLP` the same weights and the
same batch, and check that logits, loss, gradients and optimizer steps agree to 1e-10 in float64.
Each layer's backward sits right beside its forward (as in karpathy's micrograd). Shapes: B is the
batch size, I and O a layer's input and output widths.
"""

import math
from collections.abc import Sequence

import numpy as np

from fashion_lightning.errors import FashionLightningError

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
