"""A multilayer perceptron: flatten, then [Linear -> ReLU -> Dropout] per hidden layer, then Linear.

The NumPy reference network (`reference/network.py`) mirrors exactly this layout, layer for layer.
"""

from collections.abc import Sequence

from torch import Tensor, nn

from fashion_lightning.errors import check_dropout


class MLP(nn.Module):
    """Fully connected classifier; also the CNN's head."""

    def __init__(
        self,
        num_classes: int = 10,
        hidden_sizes: Sequence[int] = (256, 128),
        dropout: float = 0.2,
        in_features: int = 28 * 28,
    ) -> None:
        """
        Args:
            num_classes: Outputs (logits).
            hidden_sizes: Width of each hidden layer, input side first; empty for a linear model.
            dropout: Probability of zeroing a hidden activation during training.
            in_features: Inputs after flattening (784 for a 28x28 image).
        """
        super().__init__()
        check_dropout(dropout)
        layers: list[nn.Module] = [nn.Flatten()]
        widths = [in_features, *hidden_sizes]
        for fan_in, fan_out in zip(widths, widths[1:]):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(widths[-1], num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)  # (B, ...) -> (B, num_classes)

    @property
    def linears(self) -> list[nn.Linear]:
        """The Linear layers, input side first (what the NumPy reference exchanges weights with)."""
        return [m for m in self.layers if isinstance(m, nn.Linear)]
