"""The module's optimizer, built once from its options for both the early check and the fit.

Parameters split three ways: conv and hidden linear weights go to Muon when it is on; every 1-D
parameter (BatchNorm weights and biases, layer biases) forms the "norm" group, with its own learning
rate scale and weight decay; the rest (and, with Muon off, the weights) stay with the recipe's
`--model.optimizer`. Lookahead, when on, wraps the whole."""

from collections.abc import Iterable
from dataclasses import dataclass

from lightning.pytorch.cli import OptimizerCallable
from torch import nn
from torch.optim import Optimizer

from fashion_lightning.optim.chain import OptimizerChain
from fashion_lightning.optim.lookahead import Lookahead
from fashion_lightning.optim.muon import FlatMuon

NORM_GROUP = "norm"


@dataclass(frozen=True)
class OptimizerOptions:
    """The module's optimizer options (see `ClassifierModule` for what each means)."""

    norm_lr_scale: float = 1.0
    norm_weight_decay: float | None = None
    muon_lr: float | None = None
    lookahead_every: int = 0
    lookahead_alpha: float = 0.5


def muon_weights(named: list[tuple[str, nn.Parameter]]) -> list[nn.Parameter]:
    """The weights Muon orthogonalizes: every trainable parameter of 2 or more dimensions but the
    last one, the output layer, which Muon's authors leave to Adam (as they do the embedding)."""
    weights = [p for _, p in named if p.ndim >= 2]
    return weights[:-1]


def param_groups(
    named: list[tuple[str, nn.Parameter]],
    options: OptimizerOptions,
    exclude: Iterable[nn.Parameter],
) -> list[dict]:
    """The recipe optimizer's groups: with the norm options at their defaults one group, in the
    parameters' order (the optimizer state of earlier checkpoints still loads); otherwise the
    matrices, and the 1-D "norm" group with its own weight decay when one is set. Its learning
    rate is scaled after the optimizer is built, when the recipe's base rate is known."""
    skip = {id(p) for p in exclude}
    kept = [p for _, p in named if id(p) not in skip]
    if options.norm_lr_scale == 1.0 and options.norm_weight_decay is None:
        return [{"params": kept}]
    norm = {"params": [p for p in kept if p.ndim <= 1], "name": NORM_GROUP}
    if options.norm_weight_decay is not None:
        norm["weight_decay"] = options.norm_weight_decay
    groups = [{"params": [p for p in kept if p.ndim > 1], "name": "weights"}, norm]
    return [g for g in groups if g["params"]]


def build_optimizer(
    named_parameters: Iterable[tuple[str, nn.Parameter]],
    make_optimizer: OptimizerCallable,
    options: OptimizerOptions,
) -> Optimizer:
    """One torch optimizer over all trainable parameters, whatever the options."""
    named = [(n, p) for n, p in named_parameters if p.requires_grad]
    muon = muon_weights(named) if options.muon_lr is not None else []
    optimizer = make_optimizer(param_groups(named, options, muon))
    for group in optimizer.param_groups:
        if group.get("name") == NORM_GROUP:
            group["lr"] *= options.norm_lr_scale
    if muon:
        optimizer = OptimizerChain([FlatMuon(muon, lr=options.muon_lr), optimizer])
    if options.lookahead_every:
        optimizer = Lookahead(optimizer, options.lookahead_every, options.lookahead_alpha)
    return optimizer
