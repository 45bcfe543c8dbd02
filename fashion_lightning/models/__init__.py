"""Networks: plain `nn.Module`s, one per file, chosen in YAML by `class_path`."""

from fashion_lightning.models.cnn import CNN
from fashion_lightning.models.mlp import MLP
from fashion_lightning.models.resnet import ResNet

__all__ = ["CNN", "MLP", "ResNet"]
