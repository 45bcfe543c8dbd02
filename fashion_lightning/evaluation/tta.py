"""Test-time augmentation: the views of an image that a classifier averages over, and their
weights (airbench's `infer`, KellerJordan/cifar10-airbench). The training step never uses it;
validation, test, predict, report, serve and export all do, through `ClassifierModule.forward`
and `trust.TrustedClassifier`, so every command sees the same averaged logits."""

from collections.abc import Callable
from typing import Literal

import torch.nn.functional as F
from torch import Tensor

# none: the image as it is; flip: the mean of the image and its mirror image; flip_translate:
# half that, plus a quarter each for the pair shifted one pixel up-left and down-right (6 views)
TTA = Literal["none", "flip", "flip_translate"]


def tta_averaged(fn: Callable[[Tensor], Tensor], x: Tensor, tta: TTA) -> Tensor:
    """The weighted mean of `fn` (a network, or its body up to a linear head) over the views of
    the normalized images `x` (B, C, H, W) that `tta` names; the weights sum to 1."""
    if tta == "none":
        return fn(x)
    if tta == "flip":
        return mirror_averaged(fn, x)
    h, w = x.shape[-2:]
    # one pixel of reflection (airbench's): the border stays the image's own background
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")  # (B, C, H + 2, W + 2)
    shifted = mirror_averaged(fn, padded[..., :h, :w]) + mirror_averaged(fn, padded[..., 2:, 2:])
    return (mirror_averaged(fn, x) + shifted / 2) / 2


def mirror_averaged(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """The mean of `fn` over each image and its left-right mirror image."""
    return (fn(x) + fn(x.flip(-1))) / 2


def resolve_tta(tta: TTA, tta_flip: bool) -> TTA:
    """The mode that `tta` and the older boolean `tta_flip` (a checkpoint's or config's from
    before `tta` existed) ask for together: `tta_flip: true` reads as `tta: flip`."""
    return "flip" if tta == "none" and tta_flip else tta
