"""The NumPy reference: a multilayer perceptron from scratch (`network`), trained and evaluated on
Fashion-MNIST by hand (`training`); `python -m fashion_lightning.reference` runs it (`__main__`). No torch: it
shares only the IDX reader (`data.idx`) with the rest of the project."""

from fashion_lightning.reference.network import (
    MLP,
    SGD,
    Adam,
    CosineDecay,
    Dropout,
    Linear,
    ReLU,
    softmax_cross_entropy,
)
from fashion_lightning.reference.training import evaluate, load_inputs, train_epoch

__all__ = [
    "MLP",
    "SGD",
    "Adam",
    "CosineDecay",
    "Dropout",
    "Linear",
    "ReLU",
    "evaluate",
    "load_inputs",
    "softmax_cross_entropy",
    "train_epoch",
]
