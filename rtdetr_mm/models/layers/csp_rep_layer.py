"""RepVGG block and CSP-RepVGG layer of the RT-DETR hybrid encoder (CCFF)."""
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_activation_layer
from mmdet.utils import ConfigType
from torch.nn.utils import skip_init

from .conv_norm import ConvNormLayer
from .reparameterize import fold_conv_bn


class RepVggBlock(nn.Module):
    """``act(conv3x3_bn(x) + conv1x1_bn(x))``, fusable into one 3x3 conv.

    Args:
        channels (int): Input and output channels.
        act_cfg (dict): Activation after the sum.
    """

    def __init__(self, channels: int, act_cfg: ConfigType = dict(type='ReLU')) -> None:
        super().__init__()
        self.channels = channels
        self.conv1 = ConvNormLayer(channels, channels, 3, 1)
        self.conv2 = ConvNormLayer(channels, channels, 1, 1)
        self.act = build_activation_layer(act_cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        if hasattr(self, 'conv'):
            return self.act(self.conv(x))
        return self.act(self.conv1(x) + self.conv2(x))

    @torch.no_grad()
    def convert_to_deploy(self) -> None:
        """Fuse both branches and their BNs into ``self.conv`` (3x3, with bias)
        and drop the branches; outputs are unchanged in eval mode."""
        if hasattr(self, 'conv'):
            return
        k3, b3 = fold_conv_bn(self.conv1.conv, self.conv1.norm)
        k1, b1 = fold_conv_bn(self.conv2.conv, self.conv2.norm)
        # skip_init: no random initialisation, so building an inference copy
        # during validation leaves torch's global generator untouched
        # (training randomness and exact resume do not depend on validation).
        self.conv = skip_init(nn.Conv2d, self.channels, self.channels, 3, 1, padding=1,
                              device=k3.device, dtype=k3.dtype)
        self.conv.weight.copy_(k3 + F.pad(k1, [1, 1, 1, 1]))
        self.conv.bias.copy_(b3 + b1)
        del self.conv1, self.conv2


class CSPRepLayer(nn.Module):
    """CSP layer: ``conv3(blocks(conv1(x)) + conv2(x))``.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        num_blocks (int): RepVGG blocks (``round(3 * depth_mult)``).
        expansion (float): Hidden channels = ``int(out_channels * expansion)``;
            ``conv3`` is a 1x1 ConvNormLayer when hidden != out, else Identity.
        act_cfg (dict): Activation of every conv and RepVGG block.
    """

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int = 3,
                 expansion: float = 1.0, act_cfg: ConfigType = dict(type='SiLU')) -> None:
        super().__init__()
        hidden = int(out_channels * expansion)
        self.conv1 = ConvNormLayer(in_channels, hidden, 1, 1, act_cfg=act_cfg)
        self.conv2 = ConvNormLayer(in_channels, hidden, 1, 1, act_cfg=act_cfg)
        self.bottlenecks = nn.Sequential(
            *[RepVggBlock(hidden, act_cfg=act_cfg) for _ in range(num_blocks)])
        self.conv3 = ConvNormLayer(hidden, out_channels, 1, 1, act_cfg=act_cfg) \
            if hidden != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H, W)."""
        return self.conv3(self.bottlenecks(self.conv1(x)) + self.conv2(x))
