"""The one inference path: uint8 images, exactly as the data set stores them, to calibrated class
probabilities and the out-of-domain score. `predict`, `report`, `serve` and `export` all run this
module, so a photo gets the same answer from each of them."""

import torch
from torch import Tensor, nn

from fashion_lightning.data import normalize
from fashion_lightning.module import ClassifierModule
from fashion_lightning.trust import trust_of


class ProbabilityModel(nn.Module):
    """uint8 images (N, 1, 28, 28) -> (class probabilities (N, C) float32, ood score (N,)
    float32): the normalization, the network (averaged with the mirror image when the checkpoint
    uses flip test-time augmentation), the temperature-scaled softmax and the ood score (> 1: not
    clothing; NaN for a checkpoint fitted before the score existed), in one graph that exports
    as it is."""

    def __init__(self, model: ClassifierModule) -> None:
        super().__init__()
        # The plain network, not the LightningModule: tracing must not touch its Trainer hooks.
        self.trusted = trust_of(model)
        self.eval().requires_grad_(False)  # inference: BatchNorm's statistics, no dropout, no grad

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        return self.trusted(normalize(images))


@torch.inference_mode()
def probabilities(
    model: ProbabilityModel, images: Tensor, batch_size: int = 1024
) -> tuple[Tensor, Tensor]:
    """Class probabilities (N, C) and ood scores (N,) of uint8 images (N, 1, 28, 28),
    `batch_size` at a time."""
    device = next(model.parameters()).device
    chunks = [
        model(images[i : i + batch_size].to(device)) for i in range(0, len(images), batch_size)
    ]
    return tuple(torch.cat([c[k].cpu() for c in chunks]) for k in (0, 1))
