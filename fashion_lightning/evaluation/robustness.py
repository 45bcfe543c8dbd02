"""Accuracy under corruption: FMNIST-C's corruptions (Weiss and Tonella 2022; MNIST-C, Mu and
Gilmer 2019), made with torchvision's v2 transforms on uint8 test images, at 3 fixed severities
each with fixed seeds. `report --robustness` writes the table and one picture.

Severities (mild, medium, strong), on images scaled to [0, 1] where it matters:

| corruption | parameter | severities |
|---|---|---|
| gaussian_noise | noise std | 0.1, 0.2, 0.3 |
| shot_noise | photons per unit intensity (Poisson) | 60, 25, 10 |
| blur | Gaussian blur sigma (kernel 5) | 0.6, 1.0, 1.5 |
| motion_blur | horizontal line kernel length (pixels) | 3, 5, 7 |
| jpeg | JPEG quality | 30, 15, 5 |
| shear | horizontal shear (degrees) | 10, 20, 30 |
| scale | zoom out to this size | 0.8, 0.65, 0.5 |
| rotate | rotation (degrees) | 10, 20, 30 |
| brightness | intensity added | 0.15, 0.3, 0.45 |
| contrast | contrast factor | 0.6, 0.4, 0.2 |
| inversion | blend towards the negative | 0.33, 0.67, 1.0 |
| horizontal_flip | share of images mirrored left-right | 0.33, 0.67, 1.0 |
| vertical_flip | share of images turned upside down | 0.33, 0.67, 1.0 |
"""

from collections.abc import Callable

import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor

SEED = 0
Corruption = Callable[[Tensor, float, torch.Generator], Tensor]


def _float(fn: Callable[[Tensor, float, torch.Generator], Tensor]) -> Corruption:
    """Run `fn` on images in [0, 1] float and return uint8 (rounded, clipped)."""

    def corrupt(images: Tensor, severity: float, generator: torch.Generator) -> Tensor:
        out = fn(images.float() / 255, severity, generator)
        return (out.clamp(0, 1) * 255).round().to(torch.uint8)

    return corrupt


def _flip_share(dims: int) -> Corruption:
    """Flip a fixed random `severity` share of the images along `dims`."""

    def corrupt(images: Tensor, share: float, generator: torch.Generator) -> Tensor:
        chosen = torch.rand(len(images), generator=generator) < share
        return torch.where(chosen[:, None, None, None], images.flip(dims), images)

    return corrupt


def _motion_blur(x: Tensor, length: float, generator: torch.Generator) -> Tensor:
    kernel = torch.full((1, 1, 1, int(length)), 1 / length)  # a horizontal streak
    return torch.nn.functional.conv2d(x, kernel, padding=(0, int(length) // 2))


CORRUPTIONS: dict[str, tuple[Corruption, tuple[float, float, float]]] = {
    "gaussian_noise": (
        _float(lambda x, s, g: x + s * torch.randn(x.shape, generator=g)),
        (0.1, 0.2, 0.3),
    ),
    "shot_noise": (_float(lambda x, s, g: torch.poisson(x * s, generator=g) / s), (60, 25, 10)),
    "blur": (_float(lambda x, s, g: TF.gaussian_blur(x, [5, 5], [s, s])), (0.6, 1.0, 1.5)),
    "motion_blur": (_float(_motion_blur), (3, 5, 7)),
    "jpeg": (lambda x, s, g: TF.jpeg(x, quality=int(s)), (30, 15, 5)),
    "shear": (lambda x, s, g: TF.affine(x, 0.0, [0, 0], 1.0, [s, 0.0]), (10, 20, 30)),
    "scale": (lambda x, s, g: TF.affine(x, 0.0, [0, 0], s, [0.0, 0.0]), (0.8, 0.65, 0.5)),
    "rotate": (lambda x, s, g: TF.rotate(x, s), (10, 20, 30)),
    "brightness": (_float(lambda x, s, g: x + s), (0.15, 0.3, 0.45)),
    "contrast": (lambda x, s, g: TF.adjust_contrast(x, s), (0.6, 0.4, 0.2)),
    "inversion": (_float(lambda x, s, g: x * (1 - s) + (1 - x) * s), (0.33, 0.67, 1.0)),
    "horizontal_flip": (_flip_share(-1), (0.33, 0.67, 1.0)),
    "vertical_flip": (_flip_share(-2), (0.33, 0.67, 1.0)),
}


def corrupted(images: Tensor, name: str, level: int) -> Tensor:
    """uint8 images (N, 1, 28, 28) under corruption `name` at severity `level` (1, 2 or 3),
    the same every time (seeded per corruption and level)."""
    corrupt, severities = CORRUPTIONS[name]
    generator = torch.Generator().manual_seed(SEED + 10 * list(CORRUPTIONS).index(name) + level)
    return corrupt(images, float(severities[level - 1]), generator)
