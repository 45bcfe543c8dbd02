"""The out-of-domain score: how far an image is from the training data ("not clothing").

A softmax always picks a garment, even for a cat. The score here is the Mahalanobis distance
(Lee et al. 2018, arXiv:1807.03888) of the network's penultimate features to the nearest class
mean, under one covariance shared by the classes, both fitted on training images at the end of
`fit`. It is reported in units of a threshold set on the validation split so that a fixed share
of real garments (FLAG_RATE) lands above it: `ood_score > 1` means "not clothing".
(scripts/ood_eval.py compares it with the max calibrated softmax and the energy score.)
"""

import copy

import torch
from torch import Tensor, nn

# Share of validation garments flagged as "not clothing": the price of catching the rest.
FLAG_RATE = 0.05
# Added to the covariance's diagonal, relative to its mean variance: features of ReLU nets have
# dead dimensions, whose zero variance would make the precision matrix blow up.
SHRINKAGE = 1e-3


def split_head(net: nn.Module) -> tuple[nn.Module, nn.Linear]:
    """(body, head) of a network whose last operation is its last `nn.Linear` (every network of
    `models/`): `head(body(x)) == net(x)`, and `body(x)` (B, D) is the penultimate features.
    `body` is a shallow copy sharing every parameter with `net`; `net` itself is unchanged."""
    name = [n for n, m in net.named_modules() if isinstance(m, nn.Linear)][-1]
    return _replaced(net, name.split("."), nn.Identity()), net.get_submodule(name)


def _replaced(module: nn.Module, path: list[str], leaf: nn.Module) -> nn.Module:
    """A copy of `module` with the submodule at `path` replaced by `leaf`; only the modules on
    the path are copied (each with its own dict of children), all else is shared."""
    clone = copy.copy(module)
    clone._modules = dict(module._modules)
    first, *rest = path
    clone._modules[first] = _replaced(module._modules[first], rest, leaf) if rest else leaf
    return clone


class MahalanobisScore(nn.Module):
    """Penultimate features (B, D) -> ood score (B,): the Mahalanobis distance to the nearest
    class mean, divided by the validation threshold (so > 1 is "not clothing")."""

    def __init__(self, means: Tensor, precision: Tensor, threshold: Tensor) -> None:
        super().__init__()
        self.register_buffer("means", means.float())  # (C, D)
        self.register_buffer("precision", precision.float())  # (D, D)
        self.register_buffer("threshold", threshold.float().reshape(()))

    def distance(self, features: Tensor) -> Tensor:
        diff = features.float()[:, None, :] - self.means  # (B, C, D)
        squared = ((diff @ self.precision) * diff).sum(-1)  # (B, C)
        return squared.min(dim=-1).values.clamp(min=0).sqrt()  # (B,)

    def forward(self, features: Tensor) -> Tensor:
        return self.distance(features) / self.threshold

    def state(self) -> dict[str, Tensor]:
        """Plain tensors for a checkpoint (loadable with weights_only)."""
        return {k: v.detach().cpu() for k, v in self.named_buffers()}

    @classmethod
    def fit(
        cls, features: Tensor, labels: Tensor, val_features: Tensor, num_classes: int
    ) -> "MahalanobisScore":
        """Class means and shared covariance from training `features` (N, D) with `labels`;
        the threshold is the (1 - FLAG_RATE) quantile of the distances of `val_features`."""
        features = features.double()
        onehot = nn.functional.one_hot(labels, num_classes).double()  # (N, C)
        means = (onehot.T @ features) / onehot.sum(0)[:, None].clamp(min=1)  # (C, D)
        centred = features - means[labels]
        covariance = centred.T @ centred / len(features)  # (D, D)
        ridge = SHRINKAGE * covariance.diagonal().mean().clamp(min=1e-12)
        covariance += ridge * torch.eye(len(covariance), dtype=covariance.dtype)
        precision = torch.linalg.inv(covariance)
        unscaled = cls(means, precision, torch.tensor(1.0))
        threshold = unscaled.distance(val_features).quantile(1 - FLAG_RATE)
        return cls(means, precision, threshold)
