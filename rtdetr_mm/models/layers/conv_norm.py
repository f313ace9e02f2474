"""Conv2d + BatchNorm2d (+ activation), the official ``ConvNormLayer``: the
one Conv+Norm module of the backbone, the neck and the head."""
from typing import Optional

import torch
import torch.nn as nn

_ACTS = {'relu': nn.ReLU, 'silu': nn.SiLU, 'gelu': nn.GELU}


def build_activation(name: Optional[str]) -> nn.Module:
    """``nn.Identity`` for None, else ReLU / SiLU / GELU by name."""
    if name is None:
        return nn.Identity()
    if name not in _ACTS:
        raise ValueError(f'unknown activation {name!r}; expected one of {sorted(_ACTS)}')
    return _ACTS[name]()


class ConvNormLayer(nn.Module):
    """``act(norm(conv(x)))`` with submodules ``conv`` and ``norm``.

    Every Conv+BN of the model is one of these: the backbone's, the neck's
    CCFF and input projections, the head's input projections.

    NOTE: mmcv's ``ConvModule`` is not used: it names its norm ``bn`` (and its
    activation ``activate``), while the official checkpoints name it
    ``norm``, so every key would change; and it Kaiming-initialises the conv
    when built, which would change the model's initial weights.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        kernel_size (int): Square kernel; padding is ``(k - 1) // 2``.
        stride (int): Convolution stride.
        act (str, optional): Activation after the norm.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 act: Optional[str] = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride,
                              padding=(kernel_size - 1) // 2, bias=False)
        self.norm = nn.BatchNorm2d(out_channels)
        self.act = build_activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H / stride, W / stride)."""
        return self.act(self.norm(self.conv(x)))
