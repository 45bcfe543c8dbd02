"""The networks on their own: output shapes and parameter counts."""

import pytest
import torch

from fashion_lightning.errors import FashionLightningError
from fashion_lightning.models import CNN, MLP, ResNet


def n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize(
    ("net", "params"),
    [
        (MLP(), 784 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10),
        (MLP(hidden_sizes=[]), 784 * 10 + 10),
        (CNN(), (9 * 32 + 2 * 32) + (9 * 32 * 64 + 2 * 64) + (64 * 7 * 7 * 128 + 128) + 1290),
        (CNN(channels=[8], batch_norm=False), (9 * 8 + 8) + (8 * 14 * 14 * 128 + 128) + 1290),
        (
            CNN(stem_stride=2),
            (9 * 32 + 2 * 32) + (9 * 32 * 64 + 2 * 64) + (64 * 7 * 7 * 128 + 128) + 1290,
        ),
    ],
)
def test_output_shape_and_parameter_count(net: torch.nn.Module, params: int) -> None:
    assert net(torch.randn(5, 1, 28, 28)).shape == (5, 10)
    assert n_params(net) == params


def test_num_classes_sets_the_output_width() -> None:
    assert MLP(num_classes=3)(torch.randn(2, 1, 28, 28)).shape == (2, 3)
    assert CNN(num_classes=3)(torch.randn(2, 1, 28, 28)).shape == (2, 3)


def test_stride_two_stem_replaces_the_first_pool() -> None:
    stem = CNN(stem_stride=2).features
    assert stem[0].stride == (2, 2) and isinstance(stem[1], torch.nn.Identity)
    assert stem[:4](torch.randn(2, 1, 28, 28)).shape == (2, 32, 14, 14)
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in stem) == 1


def test_mlp_exposes_its_linear_layers_in_order() -> None:
    assert [layer.out_features for layer in MLP(hidden_sizes=[64, 32]).linears] == [64, 32, 10]


@pytest.mark.parametrize(("depth", "stem_stride", "side"), [(10, 1, 7), (16, 2, 4)])
def test_resnet_stages_halve_the_image_twice(depth: int, stem_stride: int, side: int) -> None:
    net = ResNet(depth=depth, width=2, base_channels=4, stem_stride=stem_stride)
    x = torch.randn(3, 1, 28, 28)
    assert net.stages(net.stem(x)).shape == (3, 4 * 2 * 4, side, side)
    assert net(x).shape == (3, 10)
    assert len(net.stages) == 3 * (depth - 4) // 6


def test_resnet_refuses_a_depth_that_is_not_6n_plus_4() -> None:
    with pytest.raises(FashionLightningError, match="6n \\+ 4"):
        ResNet(depth=12)


@pytest.mark.parametrize("make", [MLP, CNN, ResNet])
def test_a_dropout_outside_zero_to_one_is_refused_clearly(make) -> None:
    with pytest.raises(FashionLightningError, match="dropout is 1.5"):
        make(dropout=1.5)
