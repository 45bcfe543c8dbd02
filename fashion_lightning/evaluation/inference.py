"""The one inference path: uint8 images, exactly as the data set stores them, to calibrated class
probabilities and the out-of-domain score. `predict` (through `ClassifierModule.predict_step`),
`report`, `serve` and `export` all run `trust.TrustedClassifier` through this module, so a photo
gets the same answer from each of them."""

import torch
from torch import Tensor, nn

from fashion_lightning.data.datamodule import normalize
from fashion_lightning.evaluation.trust import trust_of


def probabilities(model: nn.Module, images: Tensor) -> tuple[Tensor, Tensor]:
    """uint8 images (N, 1, 28, 28) -> (class probabilities (N, C) float32, temperature-scaled;
    ood score (N,) float32, above 1 "not clothing", NaN without an ood fit) of a
    `ClassifierModule`: the normalization, the network (averaged over the views of its
    test-time augmentation, `tta`), the temperature, the softmax and the ood score."""
    return trust_of(model).to(images.device)(normalize(images))


class ProbabilityModel(nn.Module):
    """`probabilities` of a trained model as one module, in eval mode, that exports as it is
    (two outputs: probabilities and ood score)."""

    def __init__(self, model: nn.Module) -> None:
        """
        Args:
            model: A `ClassifierModule` (or anything with its `net`, `tta`, `temperature`
                and `ood_state`).
        """
        super().__init__()
        # The plain network, not the LightningModule: tracing must not touch its Trainer hooks.
        self.trusted = trust_of(model)
        self.eval().requires_grad_(False)  # inference: BatchNorm's statistics, no dropout, no grad

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        return self.trusted(normalize(images))


@torch.inference_mode()
def predict_images(
    model: ProbabilityModel, images: Tensor, batch_size: int = 1000
) -> tuple[Tensor, Tensor]:
    """Class probabilities (N, C) and ood scores (N,) of uint8 images (N, 1, 28, 28),
    `batch_size` at a time."""
    device = next(model.parameters()).device
    outputs = [model(batch.to(device)) for batch in images.split(batch_size)]
    return tuple(torch.cat([o[k].cpu() for o in outputs]) for k in (0, 1))
