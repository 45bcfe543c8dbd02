"""The shared LightningModule's own bookkeeping (its training behaviour is tested through fits)."""

import pytest

from fashion_lightning.models import MLP
from fashion_lightning.training.module import ClassifierModule


@pytest.mark.parametrize(
    ("decay", "expected"), [("none", [0.1, 0.1, 0.1]), ("linear", [0.1, 0.05, 0.0])]
)
def test_label_smoothing_falls_to_zero_over_the_run_when_asked(decay, expected, monkeypatch):
    module = ClassifierModule(MLP(), label_smoothing=0.1, label_smoothing_decay=decay)
    module.total_steps = 10
    for step, smoothing in zip((0, 5, 10), expected, strict=True):
        monkeypatch.setattr(ClassifierModule, "global_step", property(lambda self, s=step: s))
        assert module.current_label_smoothing() == pytest.approx(smoothing)
