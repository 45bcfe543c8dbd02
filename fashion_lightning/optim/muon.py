"""torch's Muon for convolution weights: each weight is orthogonalized as a matrix of
(output channels, everything else).

`torch.optim.Muon` refuses any parameter that is not 2-D. airbench (KellerJordan/cifar10-airbench,
airbench94_muon.py) reshapes a conv weight (O, I, kH, kW) to (O, I*kH*kW) for the update. Here
the matrix is a view of the weight in its own memory order (channels-last weights are laid out as
(O, kH, kW, I)), so Muon's in-place update lands in the weight itself with no copy; the order of
the columns does not matter, since orthogonalization commutes with permuting them."""

from collections.abc import MutableMapping

import torch
from torch import Tensor


def as_matrix(tensor: Tensor, like: Tensor) -> Tensor:
    """`tensor` as an (O, rest) matrix, its trailing dimensions in the memory order of `like`
    (largest stride first): a view for `like` itself, a copy only where `tensor`'s layout differs."""
    if like.ndim == 2:
        return tensor
    rest = sorted(range(1, like.ndim), key=lambda d: -like.stride(d))
    return tensor.permute(0, *rest).reshape(len(tensor), -1)


class FlatMuon(torch.optim.Muon):
    """`torch.optim.Muon` that also takes parameters of more than two dimensions (conv weights)."""

    def __init__(self, params, **kwargs) -> None:
        params = list(params)
        # torch's constructor checks the arguments, then refuses >2-D parameters: let it check
        # them on a 2-D stand-in, then register the real parameters with its defaults.
        defaults = torch.optim.Muon([torch.zeros(1, 1)], **kwargs).defaults
        torch.optim.Optimizer.__init__(self, params, defaults)

    def _init_group(
        self,
        group: MutableMapping,
        params_with_grad: list[Tensor],
        grads: list[Tensor],
        muon_momentum_bufs: list[Tensor],
    ) -> bool:
        """torch's collection of the group's tensors, each seen as a matrix (a private torch hook,
        fenced here; tests/test_optim.py fails if it moves). The momentum buffer keeps the
        weight's shape and layout, so the saved state reads like any optimizer's."""
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            params_with_grad.append(as_matrix(p, p))
            grads.append(as_matrix(p.grad, p))
            muon_momentum_bufs.append(as_matrix(state["momentum_buffer"], p))
        return False  # no complex parameters
