"""AIFI: the post-norm transformer encoder layer of the hybrid encoder."""
import torch
import torch.nn as nn
from mmcv.cnn import build_activation_layer
from mmdet.utils import ConfigType

from .precision import clamp_fp16_overflow


class AIFILayer(nn.Module):
    """Self-attention + FFN, each with residual and post-LayerNorm; names match
    the official ``TransformerEncoderLayer`` (``self_attn``, ``linear1``,
    ``linear2``, ``norm1``, ``norm2``).

    Args:
        hidden_dim (int): Token channels.
        num_heads (int): Attention heads.
        dim_feedforward (int): FFN width.
        dropout (float): Dropout in attention and FFN.
        act_cfg (dict): FFN activation (GELU officially).
    """

    def __init__(self, hidden_dim: int, num_heads: int, dim_feedforward: int = 1024,
                 dropout: float = 0.0,
                 act_cfg: ConfigType = dict(type='GELU')) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(hidden_dim, num_heads, dropout, batch_first=True)
        self.linear1 = nn.Linear(hidden_dim, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, hidden_dim)
        self.norm1 = nn.LayerNorm(hidden_dim)
        self.norm2 = nn.LayerNorm(hidden_dim)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.activation = build_activation_layer(act_cfg)

    def forward(self, src: torch.Tensor, pos_embed: torch.Tensor) -> torch.Tensor:
        """(B, N, hidden_dim) tokens and (1, N, hidden_dim) position embedding
        -> (B, N, hidden_dim).

        NOTE: under fp16 the FFN residual is clamped to +-65504 before
        ``norm2`` (the official code clamps in the decoder only; the GELU FFN
        here overflows the same way; see
        :func:`.precision.clamp_fp16_overflow`)."""
        q = k = src + pos_embed
        attended, _ = self.self_attn(q, k, value=src, need_weights=False)
        src = self.norm1(src + self.dropout1(attended))
        ffn = self.linear2(self.dropout(self.activation(self.linear1(src))))
        return self.norm2(clamp_fp16_overflow(src + self.dropout2(ffn)))


class AIFIEncoder(nn.Module):
    """``num_layers`` stacked :class:`AIFILayer` (submodules ``layers.{i}``)."""

    def __init__(self, num_layers: int, **layer_kwargs) -> None:
        super().__init__()
        self.layers = nn.ModuleList(AIFILayer(**layer_kwargs) for _ in range(num_layers))

    def forward(self, src: torch.Tensor, pos_embed: torch.Tensor) -> torch.Tensor:
        """(B, N, hidden_dim) tokens and (1, N, hidden_dim) position embedding
        -> (B, N, hidden_dim), through every layer."""
        for layer in self.layers:
            src = layer(src, pos_embed)
        return src
