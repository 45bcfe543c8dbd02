"""The shared LightningModule's own bookkeeping (its training behaviour is tested through fits)."""

import torch
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from fashion_lightning.module import TrainingSums


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
