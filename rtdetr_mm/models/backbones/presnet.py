"""PResNet: the ResNet-vd backbone of RT-DETR (Paddle-style ResNet)."""
from collections import OrderedDict
from typing import List, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_activation_layer
from mmdet.registry import MODELS
from mmdet.utils import ConfigType
from mmengine.model import BaseModule
from torch.utils.checkpoint import checkpoint

from ..layers.conv_norm import ConvNormLayer
from ..layers.frozen_bn import freeze_batch_norms

_BLOCKS_PER_STAGE = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


def _shortcut(in_channels: int, out_channels: int, stride: int, variant: str) -> nn.Module:
    """Projection shortcut. Variant ``d`` replaces a strided 1x1 conv by
    ``AvgPool2d(2, ceil_mode)`` + 1x1 conv (keys ``short.pool``, ``short.conv``)."""
    if variant == 'd' and stride == 2:
        return nn.Sequential(OrderedDict([
            ('pool', nn.AvgPool2d(2, 2, 0, ceil_mode=True)),
            ('conv', ConvNormLayer(in_channels, out_channels, 1, 1)),
        ]))
    return ConvNormLayer(in_channels, out_channels, 1, stride)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN with a residual; the first block of a stage projects."""
    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int, project: bool,
                 act_cfg: ConfigType = dict(type='ReLU'), variant: str = 'd') -> None:
        super().__init__()
        self.project = project
        if project:
            self.short = _shortcut(in_channels, channels, stride, variant)
        self.branch2a = ConvNormLayer(in_channels, channels, 3, stride, act_cfg=act_cfg)
        self.branch2b = ConvNormLayer(channels, channels, 3, 1)
        self.act = build_activation_layer(act_cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branch2b(self.branch2a(x))
        return self.act(out + (self.short(x) if self.project else x))


class BottleNeck(nn.Module):
    """1x1 -> 3x3 (strided, variant b/d) -> 1x1 (x4 channels) with a residual."""
    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int, project: bool,
                 act_cfg: ConfigType = dict(type='ReLU'), variant: str = 'd') -> None:
        super().__init__()
        stride_1x1, stride_3x3 = (stride, 1) if variant == 'a' else (1, stride)
        self.branch2a = ConvNormLayer(in_channels, channels, 1, stride_1x1, act_cfg=act_cfg)
        self.branch2b = ConvNormLayer(channels, channels, 3, stride_3x3, act_cfg=act_cfg)
        self.branch2c = ConvNormLayer(channels, channels * self.expansion, 1, 1)
        self.project = project
        if project:
            self.short = _shortcut(in_channels, channels * self.expansion, stride, variant)
        self.act = build_activation_layer(act_cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branch2c(self.branch2b(self.branch2a(x)))
        return self.act(out + (self.short(x) if self.project else x))


class _Stage(nn.Module):
    """Blocks of one stage (submodules ``blocks.{i}``); with ``with_cp`` each
    block is run under activation checkpointing when gradients are on."""

    def __init__(self, block, in_channels: int, channels: int, count: int, stride: int,
                 act_cfg: ConfigType, variant: str, with_cp: bool = False) -> None:
        super().__init__()
        self.with_cp = with_cp
        self.blocks = nn.ModuleList()
        for i in range(count):
            self.blocks.append(block(in_channels, channels, stride if i == 0 else 1,
                                     project=(i == 0), act_cfg=act_cfg, variant=variant))
            in_channels = channels * block.expansion

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            if self.with_cp and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x


@MODELS.register_module()
class PResNet(BaseModule):
    """ResNet-vd backbone as in the official RT-DETR ``PResNet``; parameter
    names match it, so official and ImageNet (converted Paddle) weights load
    by name.

    Stem: three 3x3 conv-BN-ReLU (3->32 stride 2, 32->32, 32->64) and a 3x3
    stride-2 max-pool. Stages of 64/128/256/512 base channels (x4 for
    bottlenecks); the first block of EVERY stage has a projection shortcut,
    including stage 0 of the basic-block nets (mmdet's ResNetV1d has none
    there, which is why it is not reused), and variant ``d`` uses avg-pool
    + 1x1 conv on the strided ones.

    Args:
        depth (int): 18, 34 (basic blocks), 50 or 101 (bottlenecks).
        variant (str): ``'d'`` (RT-DETR), ``'b'`` or ``'a'``.
        num_stages (int): Residual stages built (<= 4).
        return_idx (Sequence[int]): Stages whose outputs are returned
            (1, 2, 3 -> strides 8, 16, 32).
        act_cfg (dict): Activation (mmcv's ``build_activation_layer``).
        freeze_at (int): -1 freezes nothing; k >= 0 freezes the stem and the
            first k stages (``requires_grad=False``).
        freeze_norm (bool): Replace every BatchNorm2d by FrozenBatchNorm2d.
        with_cp (bool): Activation checkpointing of every residual block
            (mmdet's ``with_cp``): the block's activations are recomputed in
            the backward pass instead of kept: less memory for one more
            forward of each block. NOTE: a trainable
            BatchNorm (``freeze_norm=False``) then updates its running
            statistics twice per step, as in mmdet's ResNet.
        init_cfg (dict, optional): e.g. ``dict(type='Pretrained',
            checkpoint=...)`` with a converted ImageNet checkpoint.
    """

    def __init__(self, depth: int = 50, variant: str = 'd', num_stages: int = 4,
                 return_idx: Sequence[int] = (1, 2, 3),
                 act_cfg: ConfigType = dict(type='ReLU'),
                 freeze_at: int = -1, freeze_norm: bool = False, with_cp: bool = False,
                 init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        if depth not in _BLOCKS_PER_STAGE:
            raise ValueError(f'PResNet depth must be one of {sorted(_BLOCKS_PER_STAGE)}, got {depth}')
        self.depth = depth
        self.return_idx = tuple(return_idx)
        if variant in ('c', 'd'):
            stem = [(3, 32, 2, 'conv1_1'), (32, 32, 1, 'conv1_2'), (32, 64, 1, 'conv1_3')]
        else:
            stem = [(3, 64, 2, 'conv1_1')]
        self.conv1 = nn.Sequential(OrderedDict(
            (name, ConvNormLayer(cin, cout, 3 if variant in ('c', 'd') else 7, stride,
                                  act_cfg=act_cfg))
            for cin, cout, stride, name in stem))
        block = BottleNeck if depth >= 50 else BasicBlock
        base = (64, 128, 256, 512)
        self.out_channels: List[int] = [c * block.expansion for c in base[:num_stages]]
        self.res_layers = nn.ModuleList()
        in_channels = 64
        for i in range(num_stages):
            self.res_layers.append(_Stage(block, in_channels, base[i], _BLOCKS_PER_STAGE[depth][i],
                                          stride=1 if i == 0 else 2, act_cfg=act_cfg,
                                          variant=variant, with_cp=with_cp))
            in_channels = self.out_channels[i]
        if freeze_at >= 0:
            frozen = [self.conv1] + list(self.res_layers[:min(freeze_at, num_stages)])
            for module in frozen:
                module.requires_grad_(False)
        if freeze_norm:
            freeze_batch_norms(self)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """
        Args:
            x (Tensor): Images (B, 3, H, W).

        Returns:
            tuple[Tensor]: One map per ``return_idx``, (B, C_i, H / s_i, W / s_i)
            with s = 4, 8, 16, 32 for stages 0..3.
        """
        x = F.max_pool2d(self.conv1(x), kernel_size=3, stride=2, padding=1)
        outs = []
        for i, stage in enumerate(self.res_layers):
            x = stage(x)
            if i in self.return_idx:
                outs.append(x)
        return tuple(outs)
