"""A pre-activation Wide ResNet (Zagoruyko & Komodakis, arXiv:1605.07146) for 28x28 images.

WRN-d-k: a 3x3 stem, then three stages of (d - 4) / 6 residual blocks each, `base_channels * k`,
`2 * base_channels * k` and `4 * base_channels * k` channels wide, the last two halving height and
width; BatchNorm -> ReLU -> global average pool -> Linear. A block is pre-activation
(He et al., arXiv:1603.05027): BN -> ReLU -> conv3x3 -> BN -> ReLU -> dropout -> conv3x3, added
to its input (through a 1x1 conv when the shape changes).

`stem_stride=2` runs the stages at 14, 7 and 4 pixels instead of 28, 14 and 7: about 1/3.6 of the
FLOPs (128 vs 463 MFLOP per training image for WRN-16-2), which makes a ResNet trainable in
minutes on two CPU cores.
"""

from typing import Literal

import torch
from torch import Tensor, nn

from fashion_lightning.errors import FashionLightningError, check_dropout
from fashion_lightning.models.whitening import dirac_init_, stem_conv


class PreActBlock(nn.Module):
    """BN -> ReLU -> conv -> BN -> ReLU -> dropout -> conv, plus the (projected) input."""

    def __init__(self, c_in: int, c_out: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(c_in), nn.BatchNorm2d(c_out)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.shortcut = (
            nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)
            if stride != 1 or c_in != c_out
            else None
        )

    def forward(self, x: Tensor) -> Tensor:
        a = torch.relu(self.bn1(x))  # the projection shortcut sees the pre-activated input too
        out = self.conv1(a)  # (B, c_out, H / stride, W / stride)
        out = self.conv2(self.dropout(torch.relu(self.bn2(out))))
        return out + (self.shortcut(a) if self.shortcut is not None else x)


class ResNet(nn.Module):
    """Pre-activation Wide ResNet WRN-`depth`-`width` for single-channel 28x28 images."""

    def __init__(
        self,
        num_classes: int = 10,
        depth: int = 16,
        width: int = 4,
        base_channels: int = 16,
        dropout: float = 0.0,
        stem_stride: Literal[1, 2] = 1,
        channels_last: bool = True,
        whiten_stem: bool = False,
        freeze_stem: bool = False,
        dirac_init: bool = False,
    ) -> None:
        """
        Args:
            num_classes: Outputs (logits).
            depth: Convolutions on the longest path, 6n + 4 for n blocks per stage (10, 16, 22,
                28, 40, ...): WRN-16-4 has 2 blocks per stage.
            width: Widening factor k: stage widths are base_channels * k * (1, 2, 4).
            base_channels: Channels of the stem, and of the first stage at width 1 (16 in WRN).
            dropout: Dropout between the two convolutions of every block (0.3 in WRN's best runs).
            stem_stride: 1: the stages run at 28, 14, 7 pixels; 2: the stem halves the image, so
                they run at 14, 7, 4, for about 1/3.6 of the compute.
            channels_last: Compute in NHWC memory layout, faster for convolutions on CPU and GPU.
            whiten_stem: Set the stem, when `fit` starts, to whiten the training images' 3x3
                patches (`models.whitening`): its first 18 channels are the 9 patch eigenvectors
                and their negatives, scaled to unit variance; the rest stay random.
            freeze_stem: Keep those whitening filters fixed in training (needs whiten_stem).
            dirac_init: Start every later convolution with at least as many outputs as inputs
                as the identity on its first input-many output channels (airbench's dirac init).
        """
        super().__init__()
        check_dropout(dropout)
        if depth < 10 or (depth - 4) % 6:
            raise FashionLightningError(
                f"ResNet depth {depth}: use 6n + 4 for n >= 1 blocks per stage (10, 16, 22, 28, "
                f"40, ...)."
            )
        if width < 1 or base_channels < 1:
            raise FashionLightningError("ResNet width and base_channels must be at least 1.")
        blocks_per_stage = (depth - 4) // 6
        widths = [base_channels * width * 2**i for i in range(3)]
        self.stem = stem_conv(
            1,
            base_channels,
            3,
            stride=stem_stride,
            padding=1,
            bias=False,
            whiten=whiten_stem,
            frozen=freeze_stem,
        )
        layers: list[nn.Module] = []
        c_in = base_channels
        for stage, c_out in enumerate(widths):
            for block in range(blocks_per_stage):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(PreActBlock(c_in, c_out, stride, dropout))
                c_in = c_out
        self.stages = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.BatchNorm2d(c_in),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(c_in, num_classes),
        )
        if dirac_init:
            dirac_init_(self, stem=self.stem)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.to(memory_format=self.memory_format)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x.contiguous(memory_format=self.memory_format))  # (B, base, 28/s, 28/s)
        x = self.stages(x)  # (B, 4 * base * width, 7/s, 7/s)
        return self.head(x)  # (B, num_classes)
