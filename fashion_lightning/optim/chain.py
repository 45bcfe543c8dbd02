"""Several torch optimizers over disjoint parameters, stepped as one torch optimizer.

Lightning's automatic optimization, its precision plugins and one LambdaLR schedule all expect a
single optimizer. The chain is one: its `param_groups` are its members' group dicts themselves
(so a schedule setting `lr` on the chain sets it on the members) and its `state` is one dict that
the members share (their parameters are disjoint). torch's own `state_dict` / `load_state_dict`
then save and restore every member exactly, and Lightning moves the state between devices."""

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.optim import Optimizer


class OptimizerChain(Optimizer):
    """Step `optimizers` one after the other on the same gradients."""

    def __init__(self, optimizers: Sequence[Optimizer]) -> None:
        params = [p for o in optimizers for g in o.param_groups for p in g["params"]]
        super().__init__(params, {})
        self.optimizers = list(optimizers)
        self.param_groups = [g for o in self.optimizers for g in o.param_groups]
        self._share()

    def _share(self) -> None:
        """Hand the chain's group dicts and its state back to the members (after a load, torch
        has replaced both with new objects)."""
        groups = iter(self.param_groups)
        for optimizer in self.optimizers:
            optimizer.param_groups = [next(groups) for _ in optimizer.param_groups]
            optimizer.state = self.state
            if isinstance(optimizer, OptimizerChain):  # a chain inside a chain (Lookahead)
                optimizer._share()

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self._share()

    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """Evaluate `closure` once (forward and backward), then step every member."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for optimizer in self.optimizers:
            optimizer.step()
        return loss
