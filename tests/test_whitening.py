"""airbench's initialisations (fashion_lightning/models/whitening.py): the whitened stem and dirac
init, alone on small tensors and end to end in a fit."""

import pytest
import torch
from conftest import FittedRun

from fashion_lightning.data.datamodule import FashionMNISTDataModule, normalize
from fashion_lightning.errors import FashionLightningError
from fashion_lightning.models import CNN, ResNet
from fashion_lightning.models.whitening import WhiteningConv2d, whitening_filters
from fashion_lightning.training.module import DATA_INIT_IMAGES


def correlated_images(n: int = 200, seed: int = 0) -> torch.Tensor:
    """Noise with neighbouring pixels correlated, as in photos: patches far from white."""
    noise = torch.randn(n, 1, 30, 30, generator=torch.Generator().manual_seed(seed))
    return noise[..., 1:-1, 1:-1] + 0.7 * noise[..., 2:, 2:] + 0.5 * noise[..., :-2, 1:-1]


@pytest.mark.parametrize("kernel", [2, 3])
def test_whitened_outputs_are_decorrelated_with_unit_variance(kernel: int) -> None:
    images = correlated_images()
    d = kernel * kernel
    conv = WhiteningConv2d(1, 2 * d, kernel, bias=False)  # airbench's shape: +v and -v
    conv.init_from_data(images)
    out = conv(images).detach().double().permute(0, 2, 3, 1).reshape(-1, 2 * d)  # (patches, 2d)
    positive, negative = out[:, 0::2], out[:, 1::2]
    moment = positive.T @ positive / len(positive)
    assert torch.allclose(moment, torch.eye(d, dtype=torch.float64), atol=0.02)
    assert torch.equal(negative, -positive)
    raw = images.unfold(2, kernel, 1).unfold(3, kernel, 1).reshape(-1, d)
    assert (raw.T @ raw / len(raw) - torch.eye(d)).abs().max() > 0.3  # there was work to do


def test_few_channels_take_the_leading_directions_and_extra_ones_keep_their_init() -> None:
    images = correlated_images()
    full = whitening_filters(images, (3, 3), 18)
    assert torch.equal(whitening_filters(images, (3, 3), 4), full[:4])
    variance = [(torch.nn.functional.conv2d(images, f[None]) ** 2).mean() for f in full[::2]]
    assert all(a <= b + 1e-3 for a, b in zip(variance, variance[1:]))  # eps weighs low ones less
    conv = WhiteningConv2d(1, 24, 3)
    before = conv.weight[18:].clone()
    conv.init_from_data(images)
    assert torch.equal(conv.weight[18:], before) and torch.allclose(conv.weight[:18], full)


def test_a_whitened_layer_is_not_recomputed_after_a_restore() -> None:
    conv = WhiteningConv2d(1, 8, 2)
    conv.init_from_data(correlated_images(seed=1))
    restored = WhiteningConv2d(1, 8, 2)
    restored.load_state_dict(conv.state_dict())
    restored.init_from_data(correlated_images(seed=2))  # what a resumed fit's hook does
    assert torch.equal(restored.weight, conv.weight) and restored.whitened


def test_a_frozen_stem_needs_whitening() -> None:
    stem = CNN(whiten_stem=True, freeze_stem=True).features[0]
    assert isinstance(stem, WhiteningConv2d) and not stem.weight.requires_grad
    with pytest.raises(FashionLightningError, match="whiten_stem"):
        CNN(freeze_stem=True)


def test_plain_nets_keep_their_checkpoint_keys() -> None:
    """Checkpoints written before these options load: off, the nets add no buffer."""
    assert not any("whitened" in k for k in CNN().state_dict())
    assert not any("whitened" in k for k in ResNet(depth=10, width=1).state_dict())


@pytest.mark.parametrize(
    "net",
    [CNN(channels=[4, 8, 8], dirac_init=True), ResNet(depth=10, width=1, dirac_init=True)],
    ids=["cnn", "resnet"],
)
def test_dirac_init_makes_later_convs_identities_on_their_first_channels(net) -> None:
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)][1:]  # all but the stem
    assert convs
    for conv in convs:
        x = torch.randn(2, conv.in_channels, 8, 8)
        s = conv.stride[0]
        with torch.no_grad():
            assert torch.allclose(conv(x)[:, : conv.in_channels], x[..., ::s, ::s], atol=1e-6)
            rest = conv.weight[conv.in_channels :]
            assert rest.numel() == 0 or rest.abs().sum() > 0  # the rest stay random


def test_fit_whitens_the_stem_from_the_training_images(airbench_fit: FittedRun, tiny_args) -> None:
    """The module's fit-start hook used the training split as the net sees it; the frozen
    filters reach the checkpoint unchanged."""
    dm = FashionMNISTDataModule(data_dir=tiny_args[0].split("=", 1)[1], val_size=16)
    dm.setup("fit")
    images = normalize(dm.splits["train"][0][:DATA_INIT_IMAGES])
    stem = airbench_fit.model.net.features[0]
    expected = whitening_filters(images, stem.kernel_size, stem.out_channels)
    checkpoint = torch.load(airbench_fit.best, weights_only=True)["state_dict"]
    assert torch.equal(checkpoint["net.features.0.weight"][: len(expected)], expected)
    assert checkpoint["net.features.0.whitened"] == 1
