"""Out-of-domain scores: how far an image is from the training data ("not clothing").

A softmax always picks a garment, even for a cat. Two scores see different failures: the energy
of the calibrated logits (Liu et al. 2020, arXiv:2010.03759), E(x) = -T logsumexp(logits / T), is
high where the network recognises no class; the Mahalanobis distance of the penultimate features
to the nearest class mean (Lee et al. 2018, arXiv:1807.03888) is high where the features lie off
the training data even though a logit is large. The score shipped (`EnergyMahalanobisScore`) is
the larger of the two, each divided by its own validation quantile, then scaled so that a fixed
share of the validation garments (FLAG_RATE) lands above 1: `ood_score > 1` means "not clothing".

scripts/ood_eval.py compares it with each score alone and the max calibrated softmax. On the
cnn_fast recipe the energy alone had to choose between catching 90% of ordinary photos and
sparing 95% of product photos of garments; the pair does both. `EnergyScore` (energy alone) is
kept: checkpoints fitted before the pair shipped carry its state and load with it.
"""

import torch
from torch import Tensor, nn

from fashion_lightning.internals import with_submodule

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
    return with_submodule(net, name.split("."), nn.Identity()), net.get_submodule(name)


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


class EnergyMahalanobisScore(nn.Module):
    """(Features (B, D), logits (B, C), temperature) -> ood score (B,):
    max(exp(E - energy_threshold), distance / distance_threshold) / scale, so > 1 is "not
    clothing". Each threshold is its score's (1 - FLAG_RATE) validation quantile, which puts the
    two on one footing; `scale` is that quantile of their maximum, so the pair, too, flags
    FLAG_RATE of the validation garments."""

    def __init__(
        self,
        energy_threshold: Tensor,
        means: Tensor,
        precision: Tensor,
        distance_threshold: Tensor,
        scale: Tensor,
    ) -> None:
        super().__init__()
        self.energy = EnergyScore(energy_threshold)
        self.mahalanobis = MahalanobisScore(means, precision, distance_threshold)
        self.register_buffer("scale", scale.float().reshape(()))

    def forward(self, features: Tensor, logits: Tensor, temperature: Tensor) -> Tensor:
        both = torch.maximum(self.energy(logits, temperature), self.mahalanobis(features))
        return both / self.scale

    def state(self) -> dict[str, Tensor]:
        """Plain tensors for a checkpoint (loadable with weights_only)."""
        mahalanobis = self.mahalanobis.state()
        return {
            "energy_threshold": self.energy.threshold.detach().cpu(),
            "means": mahalanobis["means"],
            "precision": mahalanobis["precision"],
            "distance_threshold": mahalanobis["threshold"],
            "scale": self.scale.detach().cpu(),
        }

    @classmethod
    def fit(
        cls,
        train: tuple[Tensor, Tensor],
        val_features: Tensor,
        val_logits: Tensor,
        temperature: float,
        num_classes: int,
    ) -> "EnergyMahalanobisScore":
        """Class means and covariance from training (features (N, D), labels (N,)); every
        threshold from the validation split's features and logits."""
        mahalanobis = MahalanobisScore.fit(*train, val_features, num_classes)
        energy_score = EnergyScore.fit(val_logits, temperature)
        parts = (energy_score.threshold, mahalanobis.means, mahalanobis.precision)
        unscaled = cls(*parts, mahalanobis.threshold, torch.tensor(1.0))
        scores = unscaled(val_features, val_logits, torch.tensor(temperature))
        return cls(*parts, mahalanobis.threshold, scores.quantile(1 - FLAG_RATE))


def ood_score_of(state: dict[str, Tensor]) -> nn.Module:
    """The score a checkpoint's ood state describes: the pair, or energy alone (fitted before
    the pair shipped)."""
    return EnergyScore(**state) if set(state) == {"threshold"} else EnergyMahalanobisScore(**state)


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
