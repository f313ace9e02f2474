"""RT-DETR(v2) hybrid encoder: AIFI on the top level + CCFF (FPN/PAN with
CSP-RepVGG blocks)."""
from functools import partial
from typing import Dict, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmdet.utils import ConfigType
from mmengine.model import BaseModule
from torch.utils.checkpoint import checkpoint

from ..layers.aifi_layer import AIFIEncoder
from ..layers.conv_norm import ConvNormLayer
from ..layers.csp_rep_layer import CSPRepLayer
from ..layers.positional_encoding import build_2d_sincos_position_embedding
from ..layers.reparameterize import reparameterize_


@MODELS.register_module()
class RTDETRv2HybridEncoder(BaseModule):
    """Hybrid encoder of RT-DETR(v2), the official ``HybridEncoder``;
    submodule names match it (official ``encoder.*`` loads as ``neck.*``).

    Flow::

        C3, C4, C5 -> input_proj (1x1 conv + BN to hidden_dim)
        AIFI (post-norm transformer layer + 2-D sin-cos PE) on use_encoder_idx
        top-down: lateral 1x1 conv, nearest x2 upsample, concat, CSPRepLayer
        bottom-up: 3x3 stride-2 conv, concat, CSPRepLayer -> 3 maps

    Args:
        in_channels (Sequence[int]): Backbone output channels.
        hidden_dim (int): Channels of every output map.
        num_heads (int): AIFI attention heads.
        dim_feedforward (int): AIFI FFN width.
        dropout (float): AIFI dropout.
        enc_act_cfg (dict): AIFI FFN activation (mmcv's
            ``build_activation_layer``).
        use_encoder_idx (Sequence[int]): Levels that get an AIFI encoder.
        num_encoder_layers (int): AIFI layers per encoded level.
        pe_temperature (float): Position-embedding temperature.
        expansion (float): CSPRepLayer hidden ratio.
        depth_mult (float): RepVGG blocks per CSPRepLayer = round(3 * depth_mult).
        act_cfg (dict): Activation of the CCFF conv blocks.
        with_cp (bool): Activation checkpointing (mmdet's ``with_cp``) of the
            AIFI encoders and of every CSPRepLayer: their activations are
            recomputed in the backward pass instead of kept. NOTE: the
            CSPRepLayers' BatchNorms then update their running statistics
            twice per training step, as mmdet's ``with_cp`` blocks do.
        init_cfg (dict, optional): mmengine init config.
    """

    def __init__(self, in_channels: Sequence[int] = (512, 1024, 2048),
                 hidden_dim: int = 256, num_heads: int = 8, dim_feedforward: int = 1024,
                 dropout: float = 0.0,
                 enc_act_cfg: ConfigType = dict(type='GELU'),
                 use_encoder_idx: Sequence[int] = (2,),
                 num_encoder_layers: int = 1, pe_temperature: float = 10000.0,
                 expansion: float = 1.0, depth_mult: float = 1.0,
                 act_cfg: ConfigType = dict(type='SiLU'), with_cp: bool = False,
                 init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.in_channels = list(in_channels)
        self.hidden_dim = hidden_dim
        self.use_encoder_idx = list(use_encoder_idx)
        self.num_encoder_layers = num_encoder_layers
        self.pe_temperature = pe_temperature
        self.with_cp = with_cp
        self._pos_cache: Dict[tuple, torch.Tensor] = {}
        self.input_proj = nn.ModuleList(ConvNormLayer(c, hidden_dim, 1) for c in in_channels)
        self.encoder = nn.ModuleList(
            AIFIEncoder(num_encoder_layers, hidden_dim=hidden_dim, num_heads=num_heads,
                        dim_feedforward=dim_feedforward, dropout=dropout, act_cfg=enc_act_cfg)
            for _ in self.use_encoder_idx)
        conv = partial(ConvNormLayer, hidden_dim, hidden_dim, act_cfg=act_cfg)
        csp = partial(CSPRepLayer, hidden_dim * 2, hidden_dim, round(3 * depth_mult), expansion,
                      act_cfg)
        fusions = range(len(in_channels) - 1)  # top-down (FPN) and bottom-up (PAN) steps
        self.lateral_convs = nn.ModuleList(conv(1, 1) for _ in fusions)
        self.fpn_blocks = nn.ModuleList(csp() for _ in fusions)
        self.downsample_convs = nn.ModuleList(conv(3, 2) for _ in fusions)
        self.pan_blocks = nn.ModuleList(csp() for _ in fusions)

    def _pos_embed(self, h: int, w: int, ref: torch.Tensor) -> torch.Tensor:
        """(1, h*w, hidden_dim) position embedding on ``ref``'s device, in
        ``ref.dtype`` (fp16 / bf16 under autocast, float64 for a float64
        model); cached by size, device and dtype.

        NOTE: the official code keeps it in fp32 under autocast. Here it
        follows the tokens: with an fp32 embedding under CPU fp16 autocast
        the fp16 run's loss moved 1.5% away from fp32 after one SGD step
        (tests/test_engine/test_optimizers/test_fp16_cpu.py), against
        2.5e-4 with the tokens' dtype; not yet understood, so not changed."""
        dtype = ref.dtype
        key = (h, w, ref.device, dtype)
        if key not in self._pos_cache:
            self._pos_cache[key] = build_2d_sincos_position_embedding(
                w, h, self.hidden_dim, self.pe_temperature, device=ref.device, dtype=dtype)
        return self._pos_cache[key]

    def forward(self, feats: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        """
        Args:
            feats (Sequence[Tensor]): Backbone maps (B, C_i, H_i, W_i), strides
                increasing by 2x.

        Returns:
            tuple[Tensor]: Maps (B, hidden_dim, H_i, W_i), same strides.
        """
        if len(feats) != len(self.in_channels):
            raise ValueError(f'RTDETRv2HybridEncoder expects {len(self.in_channels)} maps, '
                             f'got {len(feats)}')
        proj = [self.input_proj[i](f) for i, f in enumerate(feats)]
        for encoder, level in zip(self.encoder, self.use_encoder_idx):
            b, c, h, w = proj[level].shape
            tokens = proj[level].flatten(2).transpose(1, 2)
            tokens = self._run(encoder, tokens, self._pos_embed(h, w, tokens))
            proj[level] = tokens.transpose(1, 2).reshape(b, c, h, w).contiguous()

        # Top-down (FPN): from the coarsest level to the finest.
        num_levels = len(proj)
        inner = [proj[-1]]
        for i, level in enumerate(range(num_levels - 1, 0, -1)):
            top = self.lateral_convs[i](inner[0])
            inner[0] = top
            upsampled = F.interpolate(top, scale_factor=2.0, mode='nearest')
            fused = torch.cat([upsampled, proj[level - 1]], 1)
            inner.insert(0, self._run(self.fpn_blocks[i], fused))
        # Bottom-up (PAN).
        outs = [inner[0]]
        for i in range(num_levels - 1):
            down = self.downsample_convs[i](outs[-1])
            outs.append(self._run(self.pan_blocks[i], torch.cat([down, inner[i + 1]], 1)))
        return tuple(outs)

    def _run(self, module: nn.Module, *inputs: torch.Tensor) -> torch.Tensor:
        """``module(*inputs)``, checkpointed with ``with_cp`` when gradients are on."""
        if self.with_cp and torch.is_grad_enabled():
            return checkpoint(module, *inputs, use_reentrant=False)
        return module(*inputs)

    def switch_to_deploy(self) -> None:
        """Fuse every RepVGG block (3x3 + 1x1 conv-BN -> one 3x3 conv) and
        fold every other conv-BN, in place (``layers/reparameterize.py``)."""
        reparameterize_(self)
