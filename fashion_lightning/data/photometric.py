"""Photometric training augmentation: random gamma, contrast, brightness and sensor noise.

Fashion-MNIST's garments are always light on a pure black background, so a network trained on it
has never seen a grey floor, a washed-out garment or grain: the README's robustness table shows
the CNNs falling to 15-50% under brightness and contrast changes and to 35% under noise that an
MLP shrugs off. This module widens the intensities a network sees during training, with generic,
continuous ranges of the kind torchvision's ColorJitter uses, not FMNIST-C's corruptions at
their evaluation severities (robustness.py), so the robustness table still measures
generalisation rather than memorised test conditions.

Like the other augmentations it works on a whole uint8 batch on the device, with no loop over
images, and draws from torch's global RNG, which Lightning seeds and the resume logic restores.
"""

import math

import torch
from torch import Tensor

GAMMA = 1.5  # gamma drawn log-uniformly in [1/1.5, 1.5]: mid-tones lighter or darker
CONTRAST = (0.5, 1.5)  # blend towards (or away from) the image's mean, as ColorJitter(contrast=.5)
BRIGHTNESS = (-0.1, 0.3)  # added to [0, 1] intensities: mostly a grey floor under the garment
NOISE_STD = 0.15  # Gaussian grain, std drawn uniformly in [0, 0.15] of full scale


def photometric_jitter(x: Tensor, p: float) -> Tensor:
    """With probability `p` per image, change uint8 images (B, 1, H, W) by a random gamma, then
    contrast, then brightness, then Gaussian noise, each of random strength (identity included),
    rounded back to uint8; the other images are returned unchanged."""
    b = len(x)
    r = torch.rand(5, b, 1, 1, 1, device=x.device)  # (5, B, 1, 1, 1): one draw per image each
    chosen = r[0] < p
    y = x.float() / 255
    y = y.pow(torch.exp(math.log(GAMMA) * (2 * r[1] - 1)))
    mean = y.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    y = mean + (y - mean) * (CONTRAST[0] + (CONTRAST[1] - CONTRAST[0]) * r[2])
    y = y + BRIGHTNESS[0] + (BRIGHTNESS[1] - BRIGHTNESS[0]) * r[3]
    y = y + NOISE_STD * r[4] * torch.randn_like(y)
    out = (y.clamp(0, 1) * 255).round().to(torch.uint8)
    return torch.where(chosen, out, x)
