"""Test-time augmentation (fashion_lightning/evaluation/tta.py): the views and their weights, the older
`tta_flip` spelling, and one averaged answer from the module and the inference path."""

import pytest
import torch
from conftest import FittedRun

from fashion_lightning.evaluation.trust import trust_of
from fashion_lightning.evaluation.tta import tta_averaged
from fashion_lightning.models import CNN
from fashion_lightning.training.checkpoint import load_model
from fashion_lightning.training.module import ClassifierModule


def framed_images(n: int = 3) -> torch.Tensor:
    """Random images with a black frame two pixels wide: shifting one pixel loses nothing, so
    a shift with reflected borders is a roll."""
    x = torch.zeros(n, 1, 28, 28)
    x[..., 2:-2, 2:-2] = torch.rand(n, 1, 24, 24)
    return x


def test_flip_translate_weighs_six_views_as_airbench() -> None:
    x = framed_images()

    def mirrored(v: torch.Tensor) -> torch.Tensor:
        return (v + v.flip(-1)) / 2

    down_right, up_left = x.roll((1, 1), dims=(-2, -1)), x.roll((-1, -1), dims=(-2, -1))
    expected = mirrored(x) / 2 + (mirrored(down_right) + mirrored(up_left)) / 4
    assert torch.allclose(tta_averaged(lambda v: v, x, "flip_translate"), expected)
    assert torch.equal(tta_averaged(lambda v: v, x, "flip"), mirrored(x))
    assert torch.equal(tta_averaged(lambda v: v, x, "none"), x)


@pytest.mark.parametrize("tta", ["flip", "flip_translate"])
def test_views_of_a_uniform_image_change_nothing(tta: str) -> None:
    """Every view of a uniform image is the image: the weights sum to 1."""
    model = ClassifierModule(CNN(channels=[4], dropout=0.0), tta=tta).eval()
    x = torch.full((2, 1, 28, 28), 0.3)
    with torch.no_grad():
        assert torch.allclose(model(x), model.net(x), atol=1e-6)
        model.train()
        assert torch.equal(model(x), model.net(x))  # training sees the image as it is


def test_tta_flip_is_the_older_spelling_of_tta_flip() -> None:
    assert ClassifierModule(CNN(channels=[4]), tta_flip=True).tta == "flip"
    assert ClassifierModule(CNN(channels=[4]), tta_flip=True, tta="flip_translate").tta == (
        "flip_translate"
    )
    assert ClassifierModule(CNN(channels=[4])).tta == "none"


def test_a_checkpoint_written_with_tta_flip_loads_with_flip(cnn_fit: FittedRun) -> None:
    assert load_model(cnn_fit.best).tta == "flip"  # cnn_fast says tta_flip: true


def test_the_module_and_the_inference_path_average_alike(airbench_fit: FittedRun) -> None:
    model = load_model(airbench_fit.best)
    assert model.tta == "flip_translate"
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        logits = trust_of(model).eval().features_and_logits(x)[1]
        assert torch.allclose(logits, model(x), atol=1e-5)
        assert not torch.allclose(model.net(x), model(x), atol=1e-3)  # the views do count
