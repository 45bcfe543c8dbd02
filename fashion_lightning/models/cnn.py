"""A small convolutional net: [3x3 conv -> 2x2 max-pool -> BatchNorm -> ReLU] per block, then the MLP
as its head.

Pooling straight after the convolution (airbench's order, KellerJordan/cifar10-airbench) runs
BatchNorm and ReLU on a quarter of the pixels; with channels-last memory this makes a training step
about 2.9x faster on CPU than conv -> BN -> ReLU -> pool in the default layout (measured on 2 cores).
"""

from collections.abc import Sequence
from functools import partial
from typing import Literal

import torch
from torch import Tensor, nn

from fashion_lightning.errors import FashionLightningError, check_dropout
from fashion_lightning.models.mlp import MLP
from fashion_lightning.models.whitening import dirac_init_, stem_conv


class CNN(nn.Module):
    """Convolutional classifier for 28x28 single-channel images."""

    def __init__(
        self,
        num_classes: int = 10,
        channels: Sequence[int] = (32, 64),
        hidden_size: int = 128,
        dropout: float = 0.25,
        batch_norm: bool = True,
        channels_last: bool = True,
        stem_stride: Literal[1, 2] = 1,
        whiten_stem: bool = False,
        freeze_stem: bool = False,
        dirac_init: bool = False,
    ) -> None:
        """
        Args:
            num_classes: Outputs (logits).
            channels: Output channels of each conv block; each block halves height and width.
            hidden_size: Width of the dense layer between the conv blocks and the output.
            dropout: Dropout before and inside the dense head.
            batch_norm: BatchNorm in each block (the conv then needs no bias).
            channels_last: Compute in NHWC memory layout, faster for convolutions on CPU and GPU.
            stem_stride: 1: the first block convolves at full resolution, then max-pools; 2: its
                convolution strides by 2 instead, with no pooling: half the cost of a training
                step on CPU, where the full-resolution max-pool is the most expensive op.
            whiten_stem: Set the first convolution, when `fit` starts, to whiten the training
                images' 3x3 patches (`models.whitening`): its first 18 channels are the 9 patch
                eigenvectors and their negatives, scaled to unit variance; the rest stay random.
            freeze_stem: Keep those whitening filters fixed in training (needs whiten_stem).
            dirac_init: Start every later convolution as the identity on its first input-many
                output channels (airbench's dirac init).
        """
        super().__init__()
        check_dropout(dropout)
        if not 1 <= len(channels) <= 4:
            raise FashionLightningError(
                f"CNN channels {list(channels)}: give 1 to 4 blocks, since each halves the 28x28 "
                f"image (28, 14, 7, 3, 1), e.g. channels: [32, 64, 128]."
            )
        blocks: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(zip([1, *channels], channels)):
            stride = stem_stride if i == 0 else 1
            first = partial(stem_conv, whiten=whiten_stem, frozen=freeze_stem)
            conv = (first if i == 0 else nn.Conv2d)(
                c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=not batch_norm
            )
            blocks += [conv, nn.MaxPool2d(2) if stride == 1 else nn.Identity()]
            blocks += [nn.BatchNorm2d(c_out)] if batch_norm else []
            blocks += [nn.ReLU()]
        self.features = nn.Sequential(*blocks)
        side = 28 // 2 ** len(channels)
        self.dropout = nn.Dropout(dropout)
        self.head = MLP(num_classes, [hidden_size], dropout, in_features=channels[-1] * side * side)
        if dirac_init:
            dirac_init_(self.features, stem=self.features[0])
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.to(memory_format=self.memory_format)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x.contiguous(memory_format=self.memory_format))  # (B, C, 28/2^k, 28/2^k)
        return self.head(self.dropout(x))  # (B, num_classes)
