"""Plain multi-layer perceptron used by the RT-DETRv2 heads."""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


class RTDETRv2MLP(nn.Module):
    """Stack of ``nn.Linear`` layers with ReLU between them (none after the last).

    Submodules are named ``layers.{i}`` as in the official ``MLP`` so checkpoints
    load by name.

    Args:
        input_dim (int): Size of the last dimension of the input.
        hidden_dim (int): Width of the hidden layers.
        output_dim (int): Size of the last dimension of the output.
        num_layers (int): Number of linear layers (>= 1).
    """

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int,
                 num_layers: int) -> None:
        super().__init__()
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(
            nn.Linear(d_in, d_out) for d_in, d_out in zip(dims_in, dims_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the MLP to the last dimension of ``x`` (shape (..., input_dim))."""
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = F.relu(x)
        return x

    def zero_last_layer(self) -> None:
        """Zero the last layer (official init of the box-regression heads)."""
        nn.init.zeros_(self.layers[-1].weight)
        nn.init.zeros_(self.layers[-1].bias)


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Logit of ``x`` after clamping ``x`` into [eps, 1 - eps] (official formula).

    Args:
        x (Tensor): Values in [0, 1], any shape.
        eps (float): Clamp used on ``x`` and ``1 - x`` before the log.
    """
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def bias_init_with_prob(prior_prob: float) -> float:
    """Bias that makes ``sigmoid(bias) == prior_prob``."""
    return float(-torch.log(torch.tensor((1 - prior_prob) / prior_prob)))


def optional_add(x: torch.Tensor, pos: Optional[torch.Tensor]) -> torch.Tensor:
    """``x + pos`` when a positional embedding is given, else ``x``."""
    return x if pos is None else x + pos
