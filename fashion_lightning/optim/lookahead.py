"""Lookahead (Zhang et al. 2019, "Lookahead Optimizer: k steps forward, 1 step back"), as airbench
uses it: every k steps the slow weights move a fraction alpha towards the fast weights, and the
fast weights restart from there.

It wraps the optimizer rather than hooking the training loop, so the slow weights travel in the
optimizer's state: saved in the checkpoint with it and restored exactly on resume, while the
commands that load weights only (validate, test, predict, export) never see them. Under DDP the
parameters are identical on every rank after each step, so the slow weights are too."""

from collections.abc import Callable

import torch
from torch import Tensor
from torch.optim import Optimizer

from fashion_lightning.optim.chain import OptimizerChain

STATE_KEY = "lookahead"


class Lookahead(OptimizerChain):
    """`optimizer` takes the fast steps; every `every` steps, slow += alpha * (fast - slow) and
    fast = slow."""

    def __init__(self, optimizer: Optimizer, every: int, alpha: float) -> None:
        super().__init__([optimizer])
        self.every, self.alpha, self.steps = every, alpha, 0
        self.params = [p for g in self.param_groups for p in g["params"]]
        self.slow = [p.detach().clone(memory_format=torch.preserve_format) for p in self.params]

    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = super().step(closure)
        self.steps += 1
        if self.steps % self.every == 0:
            with torch.no_grad():
                for slow, fast in zip(self.slow, self.params):
                    slow.lerp_(fast, self.alpha)
                    fast.copy_(slow)
        return loss

    def state_dict(self) -> dict:
        state = super().state_dict()
        state[STATE_KEY] = {"steps": self.steps, "slow": [s.clone() for s in self.slow]}
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        """Copied into the existing slow weights: they keep this run's device and layout."""
        super().load_state_dict(state_dict)
        saved = state_dict[STATE_KEY]
        self.steps = saved["steps"]
        with torch.no_grad():
            for slow, value in zip(self.slow, saved["slow"], strict=True):
                slow.copy_(value)
