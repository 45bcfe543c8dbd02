"""Calibration: making `confidence` mean how often the model is right.

Temperature scaling (Guo et al. 2017, arXiv:1706.04599) divides the logits by one scalar T fitted
on held-out data; it changes no prediction (the arg-max is the same), only how sure they sound. A
network trained with label smoothing is under-confident (T < 1 sharpens it); one trained on plain
cross-entropy tends to be over-confident (T > 1 softens it).
"""

import torch
from torch import Tensor
from torchmetrics.functional.classification import multiclass_calibration_error

ECE_BINS = 15  # Guo et al.'s binning; the figure every calibration paper reports
# The range T is fitted in. The shipped recipes' fits measured so far land at 0.6-0.9; the bound
# binds only where the NLL has no minimum (see `fit_temperature`).
T_MIN, T_MAX = 0.1, 10.0


def fit_temperature(logits: Tensor, labels: Tensor) -> float:
    """The T in [T_MIN, T_MAX] that minimises the negative log-likelihood of `softmax(logits / T)`
    on (`logits` (N, C), `labels` (N,)). The NLL is convex in 1/T, so L-BFGS on log(1/T) (which
    keeps T positive) finds the one minimum in a few iterations, and clamping it gives the
    minimum over the range; float64 makes it exact to well below what the figures show.

    When every image is right (a tiny or easy validation split) the NLL has no minimum: it falls
    for ever as T -> 0, and L-BFGS stops wherever its gradient underflows (T ~ 0.004 on the
    tests' tiny fits: one-hot probabilities, float rounding amplified 250-fold). Then T_MIN."""
    with torch.inference_mode(False), torch.enable_grad():  # also when called without grad
        logits, labels = logits.detach().double().cpu().clone(), labels.cpu().clone()
        if bool((margins(logits, labels) > 0).all()):
            return T_MIN
        log_beta = torch.zeros((), dtype=torch.float64, requires_grad=True)  # beta = 1 / T
        optimizer = torch.optim.LBFGS(
            [log_beta], lr=1.0, max_iter=100, line_search_fn="strong_wolfe"
        )

        def nll() -> Tensor:
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(logits * log_beta.exp(), labels)
            loss.backward()
            return loss

        optimizer.step(nll)
    return float((1.0 / log_beta.detach().exp()).clamp(T_MIN, T_MAX))


def margins(logits: Tensor, labels: Tensor) -> Tensor:
    """Each row's true-class logit minus its largest other logit (N,): > 0 where it is right."""
    true = logits.gather(-1, labels[:, None])[:, 0]
    return true - logits.scatter(-1, labels[:, None], -torch.inf).amax(-1)


def calibration_error(probs: Tensor, labels: Tensor) -> float:
    """The 15-bin expected calibration error (L1) of class probabilities `probs` (N, C): the
    mean gap between confidence and accuracy, bins weighted by how many predictions fall in
    them (torchmetrics' `MulticlassCalibrationError`)."""
    return float(
        multiclass_calibration_error(
            probs.float(), labels, num_classes=probs.shape[-1], n_bins=ECE_BINS, norm="l1"
        )
    )


def reliability(probs: Tensor, labels: Tensor, bins: int = ECE_BINS) -> tuple[Tensor, ...]:
    """Per confidence bin (equal widths over [0, 1]): mean confidence, accuracy and the number of
    predictions, for a reliability diagram (empty bins hold NaN and 0)."""
    confidence, predicted = probs.float().max(dim=-1)
    correct = (predicted == labels).float()
    which = (confidence * bins).long().clamp(max=bins - 1)  # (N,) bin index
    count = torch.bincount(which, minlength=bins).float()
    mean_conf = torch.bincount(which, weights=confidence, minlength=bins) / count
    accuracy = torch.bincount(which, weights=correct, minlength=bins) / count
    return mean_conf, accuracy, count
