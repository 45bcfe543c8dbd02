"""torch's Muon for convolution weights: each weight is orthogonalized as a matrix of
(output channels, everything else).

`torch.optim.Muon` refuses any parameter that is not 2-D. airbench (KellerJordan/cifar10-airbench,
airbench94_muon.py) reshapes a conv weight (O, I, kH, kW) to (O, I*kH*kW) for the update. Here
the matrix is a view of the weight in its own memory order (channels-last weights are laid out as
(O, kH, kW, I)), so Muon's in-place update lands in the weight itself with no copy; the order of
the columns does not matter, since orthogonalization commutes with permuting them.

torch runs Muon's Newton-Schulz iteration in bfloat16, always. On a CPU without bfloat16 units
(AVX2 only, such as AMD Zen 3) every bf16 matrix product is emulated: 82% of a `cnn_fast` step went
there. FlatMuon runs the same iteration in float32 on such CPUs and in bfloat16 everywhere else,
where it computes exactly what torch's does."""

from collections.abc import MutableMapping
from functools import cache

import torch
from torch import Tensor

from fashion_lightning.internals import cpu_bf16_units, muon_newton_schulz


def as_matrix(tensor: Tensor, like: Tensor) -> Tensor:
    """`tensor` as an (O, rest) matrix, its trailing dimensions in the memory order of `like`
    (largest stride first): a view for `like` itself, a copy only where `tensor`'s layout differs."""
    if like.ndim == 2:
        return tensor
    rest = sorted(range(1, like.ndim), key=lambda d: -like.stride(d))
    return tensor.permute(0, *rest).reshape(len(tensor), -1)


def muon_defaults(**kwargs) -> dict:
    """torch Muon's defaults updated by `kwargs`, checked by torch's own constructor on a 2-D
    stand-in parameter (the constructor refuses parameters of more dimensions)."""
    return torch.optim.Muon([torch.zeros(1, 1)], **kwargs).defaults


DEFAULTS = muon_defaults()


@cache
def newton_schulz_dtype(device_type: str) -> torch.dtype:
    """bfloat16, torch's choice, except on a CPU that would emulate it."""
    if device_type == "cpu" and not any(cpu_bf16_units().values()):
        return torch.float32
    return torch.bfloat16


def newton_schulz(
    grad: Tensor,
    ns_coefficients: tuple[float, float, float] = DEFAULTS["ns_coefficients"],
    ns_steps: int = DEFAULTS["ns_steps"],
    eps: float = DEFAULTS["eps"],
    dtype: torch.dtype | None = None,
) -> Tensor:
    """torch's `_zeropower_via_newtonschulz` (the quintic iteration of KellerJordan/Muon), op for
    op, in `dtype` (by default `newton_schulz_dtype`): an approximately orthogonal matrix
    U S' V^T, S' ~ 1, from `grad` = U S V^T."""
    a, b, c = ns_coefficients
    x = grad.to(dtype or newton_schulz_dtype(grad.device.type))
    tall = grad.size(0) > grad.size(1)
    if tall:
        x = x.T  # iterate on the smaller Gram matrix
    x = x / x.norm().clamp(min=eps)  # spectral norm <= Frobenius norm <= 1
    for _ in range(ns_steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if tall else x


class FlatMuon(torch.optim.Muon):
    """`torch.optim.Muon` that also takes parameters of more than two dimensions (conv weights),
    and orthogonalizes in float32 on CPUs without bfloat16 units."""

    def __init__(self, params, **kwargs) -> None:
        torch.optim.Optimizer.__init__(self, list(params), muon_defaults(**kwargs))

    def step(self, closure=None):
        """torch's step, orthogonalizing with `newton_schulz`."""
        with muon_newton_schulz(newton_schulz):
            return super().step(closure)

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
