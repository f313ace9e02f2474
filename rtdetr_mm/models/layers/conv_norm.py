"""Conv2d + BatchNorm2d (+ activation), the official ``ConvNormLayer``: the
one Conv+Norm module of the backbone, the neck and the head."""
import torch
import torch.nn as nn
from mmcv.cnn import build_activation_layer
from mmdet.utils import OptConfigType


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
        act_cfg (dict, optional): Activation after the norm (mmcv's
            ``build_activation_layer``, e.g. ``dict(type='SiLU')``); None:
            none (``nn.Identity``, no state-dict entry).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 act_cfg: OptConfigType = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride,
                              padding=(kernel_size - 1) // 2, bias=False)
        self.norm = nn.BatchNorm2d(out_channels)
        self.act = build_activation_layer(act_cfg) if act_cfg else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H / stride, W / stride)."""
        return self.act(self.norm(self.conv(x)))
