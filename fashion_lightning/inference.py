"""The one inference path: uint8 images, exactly as the data set stores them, to class
probabilities. `predict`, `report`, `serve` and `export` all run this module, so a photo gets the
same answer from each of them."""

import torch
from torch import Tensor, nn

from fashion_lightning.data import normalize
from fashion_lightning.module import ClassifierModule, flip_averaged


class ProbabilityModel(nn.Module):
    """uint8 images (N, 1, 28, 28) -> class probabilities (N, C) float32: the normalization, the
    network (averaged with the mirror image when the checkpoint uses flip test-time
    augmentation) and the softmax, in one graph that exports as it is."""

    def __init__(self, model: ClassifierModule) -> None:
        super().__init__()
        # The plain network, not the LightningModule: tracing must not touch its Trainer hooks.
        self.net, self.tta_flip = model.net, model.tta_flip
        self.eval().requires_grad_(False)  # inference: BatchNorm's statistics, no dropout, no grad

    def forward(self, images: Tensor) -> Tensor:
        x = normalize(images)
        logits = flip_averaged(self.net, x) if self.tta_flip else self.net(x)
        return logits.float().softmax(dim=-1)


@torch.inference_mode()
def probabilities(model: ProbabilityModel, images: Tensor, batch_size: int = 1024) -> Tensor:
    """Class probabilities (N, C) of uint8 images (N, 1, 28, 28), `batch_size` at a time."""
    device = next(model.parameters()).device
    chunks = [
        model(images[i : i + batch_size].to(device)).cpu()
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(chunks)
