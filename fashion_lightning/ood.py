"""Out-of-domain scores: how far an image is from the training data ("not clothing").

A softmax always picks a garment, even for a cat. The score shipped is the energy of the
calibrated logits (Liu et al. 2020, arXiv:2010.03759), E(x) = -T logsumexp(logits / T): low for
what the network recognises, high for what it does not. It is reported relative to a threshold
set on the validation split so that a fixed share of real garments (FLAG_RATE) lands above it,
as `ood_score = exp(E - threshold)`: `ood_score > 1` means "not clothing".

scripts/ood_eval.py chose it over the max calibrated softmax and the Mahalanobis distance of the
penultimate features to the nearest class mean (Lee et al. 2018, arXiv:1807.03888; kept here as
`MahalanobisScore`, with `split_head` for the features): on digits, ordinary photos and
product-style photos of garments, energy separated best for the CNNs.
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


class EnergyScore(nn.Module):
    """Logits (B, C) -> ood score (B,): exp(energy - threshold), so > 1 is "not clothing"."""

    def __init__(self, threshold: Tensor) -> None:
        super().__init__()
        self.register_buffer("threshold", threshold.float().reshape(()))

    def forward(self, logits: Tensor, temperature: Tensor) -> Tensor:
        return torch.exp(energy(logits, temperature) - self.threshold)

    def state(self) -> dict[str, Tensor]:
        """Plain tensors for a checkpoint (loadable with weights_only)."""
        return {"threshold": self.threshold.detach().cpu()}

    @classmethod
    def fit(cls, val_logits: Tensor, temperature: float) -> "EnergyScore":
        """The threshold: the (1 - FLAG_RATE) quantile of the validation split's energies."""
        return cls(energy(val_logits, torch.tensor(temperature)).quantile(1 - FLAG_RATE))


def energy(logits: Tensor, temperature: Tensor) -> Tensor:
    """-T logsumexp(logits / T) (B,): the free energy of the calibrated logits."""
    return -temperature * torch.logsumexp(logits.float() / temperature, dim=-1)


class MahalanobisScore(nn.Module):
    """Penultimate features (B, D) -> the Mahalanobis distance to the nearest class mean, divided
    by the validation threshold (so > 1 is "not clothing"): the candidate ood_eval compares."""

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
