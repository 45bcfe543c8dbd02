"""The one inference path: uint8 images, exactly as the data set stores them, to class
probabilities. `predict` (through `ClassifierModule.predict_step`), `report`, `serve` and `export`
all run `probabilities` below, so a photo gets the same answer from each of them."""

import torch
from torch import Tensor, nn

from fashion_lightning.data import normalize


def flip_averaged(net: nn.Module, x: Tensor) -> Tensor:
    """Flip test-time augmentation: the mean logits of each image and its mirror image."""
    return (net(x) + net(x.flip(-1))) / 2


def probabilities(net: nn.Module, images: Tensor, tta_flip: bool = False) -> Tensor:
    """uint8 images (N, 1, 28, 28) -> class probabilities (N, C) float32: the normalization, the
    network (averaged with the mirror image under flip test-time augmentation), the softmax."""
    x = normalize(images)
    logits = flip_averaged(net, x) if tta_flip else net(x)
    return logits.float().softmax(dim=-1)  # float32 even under bf16 autocast


class ProbabilityModel(nn.Module):
    """`probabilities` of a trained model as one module, in eval mode, that exports as it is."""

    def __init__(self, model: nn.Module) -> None:
        """
        Args:
            model: A `ClassifierModule` (or anything with its `net` and `tta_flip`).
        """
        super().__init__()
        # The plain network, not the LightningModule: tracing must not touch its Trainer hooks.
        self.net, self.tta_flip = model.net, model.tta_flip
        self.eval().requires_grad_(False)  # inference: BatchNorm's statistics, no dropout, no grad

    def forward(self, images: Tensor) -> Tensor:
        return probabilities(self.net, images, self.tta_flip)


@torch.inference_mode()
def predict_images(model: ProbabilityModel, images: Tensor, batch_size: int = 1000) -> Tensor:
    """Class probabilities (N, C) of uint8 images (N, 1, 28, 28), `batch_size` at a time."""
    device = next(model.parameters()).device
    batches = images.split(batch_size)
    return torch.cat([model(batch.to(device)).cpu() for batch in batches])
