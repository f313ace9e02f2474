"""RT-DETRv2 transformer decoder: post-norm layers with deformable cross-attention
and iterative box refinement."""
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmcv.cnn import build_activation_layer
from mmdet.models.layers.transformer import inverse_sigmoid
from mmdet.utils import ConfigType

from .ms_deform_attn_v2 import MSDeformableAttentionV2
from .precision import clamp_fp16_overflow


class RTDETRv2DecoderLayer(nn.Module):
    """Self-attention -> deformable cross-attention -> FFN, each followed by a
    residual add and LayerNorm (post-norm), as the official
    ``TransformerDecoderLayer``; submodule names match it.

    Args:
        hidden_dim (int): Query channels.
        num_heads (int): Heads of both attentions.
        dim_feedforward (int): FFN hidden width.
        dropout (float): Dropout after each block (0 in every official config).
        act_cfg (dict): FFN activation, ReLU officially.
        num_levels (int): Feature levels for cross-attention.
        num_points (int | list[int]): Sampling points per level.
        cross_attn_method (str): ``'default'`` or ``'discrete'``.
        offset_scale (float): See :class:`MSDeformableAttentionV2`.
    """

    def __init__(self, hidden_dim: int = 256, num_heads: int = 8, dim_feedforward: int = 1024,
                 dropout: float = 0.0, act_cfg: ConfigType = dict(type='ReLU'),
                 num_levels: int = 3,
                 num_points: Union[int, List[int]] = 4, cross_attn_method: str = 'default',
                 offset_scale: float = 0.5) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(hidden_dim, num_heads, dropout=dropout,
                                               batch_first=True)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(hidden_dim)
        self.cross_attn = MSDeformableAttentionV2(hidden_dim, num_heads, num_levels, num_points,
                                                  method=cross_attn_method,
                                                  offset_scale=offset_scale)
        self.dropout2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(hidden_dim)
        self.linear1 = nn.Linear(hidden_dim, dim_feedforward)
        self.activation = build_activation_layer(act_cfg)
        self.dropout3 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, hidden_dim)
        self.dropout4 = nn.Dropout(dropout)
        self.norm3 = nn.LayerNorm(hidden_dim)
        nn.init.xavier_uniform_(self.linear1.weight)
        nn.init.xavier_uniform_(self.linear2.weight)

    def forward(self, target: torch.Tensor, reference_boxes: torch.Tensor,
                memory: torch.Tensor, spatial_shapes: Sequence[Tuple[int, int]],
                attn_mask: Optional[torch.Tensor],
                query_pos: torch.Tensor) -> torch.Tensor:
        """
        Args:
            target (Tensor): Query content, shape (B, Nq, hidden_dim).
            reference_boxes (Tensor): cxcywh normalised, shape (B, Nq, 1, 4).
            memory (Tensor): Flattened encoder features, (B, sum(HW), hidden_dim).
            spatial_shapes (Sequence[tuple[int, int]]): (H_l, W_l) per level.
            attn_mask (Tensor, optional): Bool (Nq, Nq), True = may NOT attend.
            query_pos (Tensor): Query position embedding, (B, Nq, hidden_dim).

        Returns:
            Tensor: Updated queries, shape (B, Nq, hidden_dim).

        NOTE: under fp16 (autocast or an fp16 model) the FFN residual is
        clamped to +-65504 before ``norm3``, as the official code (which
        clamps in every dtype; see :func:`.precision.clamp_fp16_overflow`).
        """
        q = k = target + query_pos
        attended, _ = self.self_attn(q, k, value=target, attn_mask=attn_mask,
                                     need_weights=False)
        target = self.norm1(target + self.dropout1(attended))

        attended = self.cross_attn(target + query_pos, reference_boxes,
                                   memory, spatial_shapes)
        target = self.norm2(target + self.dropout2(attended))

        ffn = self.linear2(self.dropout3(self.activation(self.linear1(target))))
        # fp16 only: an overflowing FFN would make norm3 return NaN
        # (official fix, lyuwenyu/RT-DETR PR #464; see clamp_fp16_overflow).
        return self.norm3(clamp_fp16_overflow(target + self.dropout4(ffn)))


class RTDETRv2TransformerDecoder(nn.Module):
    """Stack of :class:`RTDETRv2DecoderLayer` with iterative box refinement.

    The per-layer score/box heads and the query position head belong to
    :class:`RTDETRv2Head` (official layout) and are passed to :meth:`forward`.

    Args:
        num_layers (int): Decoder layers.
        eval_idx (int): Last layer run at inference (negative counts from the
            end). RT-DETRv2-M trains 6 layers and evaluates the 3rd (``2``).
        layer_kwargs: Arguments of :class:`RTDETRv2DecoderLayer`.
    """

    def __init__(self, num_layers: int, eval_idx: int = -1, **layer_kwargs) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            RTDETRv2DecoderLayer(**layer_kwargs) for _ in range(num_layers))
        self.num_layers = num_layers
        self.eval_idx = eval_idx if eval_idx >= 0 else num_layers + eval_idx
        if not 0 <= self.eval_idx < num_layers:
            raise ValueError(f'eval_idx {eval_idx} is out of range for {num_layers} layers')

    def forward(self, target: torch.Tensor, ref_boxes_logit: torch.Tensor,
                memory: torch.Tensor, spatial_shapes: Sequence[Tuple[int, int]],
                bbox_heads: nn.ModuleList, score_heads: nn.ModuleList,
                query_pos_head: nn.Module,
                attn_mask: Optional[torch.Tensor] = None,
                all_layers: Optional[bool] = None
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Run the layers, refining boxes after each one.

        Args:
            target (Tensor): Initial query content, shape (B, Nq, hidden_dim).
            ref_boxes_logit (Tensor): Initial boxes as logits of cxcywh
                normalised coordinates, shape (B, Nq, 4) (already detached).
            memory (Tensor): Flattened encoder features, (B, sum(HW), hidden_dim).
            spatial_shapes (Sequence[tuple[int, int]]): (H_l, W_l) per level.
            bbox_heads (nn.ModuleList): One box MLP per layer.
            score_heads (nn.ModuleList): One class Linear per layer.
            query_pos_head (nn.Module): MLP from a cxcywh box to a position
                embedding.
            attn_mask (Tensor, optional): Bool self-attention mask (Nq, Nq).
            all_layers (bool, optional): Output every layer (L' = num_layers)
                or only layer ``eval_idx`` (L' = 1); None: every layer in
                training, ``eval_idx`` in eval. True in eval is the
                validation loss (same values as training, without dropout).

        Returns:
            tuple[Tensor, Tensor]: Boxes (L', B, Nq, 4), cxcywh normalised, and
            class logits (L', B, Nq, num_classes); L' = num_layers in training,
            1 (layer ``eval_idx``) in eval (see ``all_layers``).

        NOTE: as in the official code (and unlike transformers), in training
        the boxes of layer i > 0 are computed from the *non-detached* boxes of
        layer i - 1, so the box loss of a layer also trains earlier layers.
        The values are identical; only gradients differ.
        """
        if all_layers is None:
            all_layers = self.training
        ref_boxes_detached = ref_boxes_logit.sigmoid()
        ref_boxes = ref_boxes_detached
        out_boxes, out_logits = [], []
        output = target
        for i, layer in enumerate(self.layers):
            query_pos = query_pos_head(ref_boxes_detached)
            output = layer(output, ref_boxes_detached.unsqueeze(2), memory, spatial_shapes,
                           attn_mask, query_pos)
            delta = bbox_heads[i](output)
            inter_boxes = torch.sigmoid(delta + inverse_sigmoid(ref_boxes_detached))
            if all_layers:
                out_logits.append(score_heads[i](output))
                if i == 0:
                    out_boxes.append(inter_boxes)
                else:
                    out_boxes.append(torch.sigmoid(delta + inverse_sigmoid(ref_boxes)))
            elif i == self.eval_idx:
                out_logits.append(score_heads[i](output))
                out_boxes.append(inter_boxes)
                break
            ref_boxes = inter_boxes
            ref_boxes_detached = inter_boxes.detach()
        return torch.stack(out_boxes), torch.stack(out_logits)
