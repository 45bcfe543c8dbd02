"""The shared LightningModule's own bookkeeping (its training behaviour is tested through fits)."""

import pytest
import torch
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from fashion_lightning.models import MLP
from fashion_lightning.training.module import ClassifierModule, TrainingSums


def test_training_sums_give_the_epoch_accuracy_and_mean_loss_of_per_step_metrics() -> None:
    """Summing on the device and handing the metrics one weighted mean per epoch gives what
    updating them every step gave: micro accuracy and the sample-weighted mean loss."""
    generator = torch.Generator().manual_seed(0)
    sums, accuracy, mean_loss = TrainingSums(), MeanMetric(), MeanMetric()
    reference_acc, reference_loss = MulticlassAccuracy(10, average="micro"), MeanMetric()
    for size in (7, 32, 3):
        logits = torch.randn(size, 10, generator=generator)
        labels = torch.randint(0, 10, (size,), generator=generator)
        loss = torch.nn.functional.cross_entropy(logits, labels)
        sums.add(logits, labels, loss)
        reference_acc.update(logits, labels)
        reference_loss.update(loss, weight=size)
    sums.flush(accuracy, mean_loss)
    assert torch.isclose(accuracy.compute(), reference_acc.compute())
    assert torch.isclose(mean_loss.compute(), reference_loss.compute())
    assert sums.seen == 0  # the next epoch starts from zero


def test_an_epoch_without_training_steps_leaves_the_metrics_untouched() -> None:
    accuracy, mean_loss = MeanMetric(), MeanMetric()
    TrainingSums().flush(accuracy, mean_loss)
    assert accuracy.update_count == mean_loss.update_count == 0


@pytest.mark.parametrize(
    ("decay", "expected"), [("none", [0.1, 0.1, 0.1]), ("linear", [0.1, 0.05, 0.0])]
)
def test_label_smoothing_falls_to_zero_over_the_run_when_asked(decay, expected, monkeypatch):
    module = ClassifierModule(MLP(), label_smoothing=0.1, label_smoothing_decay=decay)
    module.total_steps = 10
    for step, smoothing in zip((0, 5, 10), expected, strict=True):
        monkeypatch.setattr(ClassifierModule, "global_step", property(lambda self, s=step: s))
        assert module.current_label_smoothing() == pytest.approx(smoothing)
