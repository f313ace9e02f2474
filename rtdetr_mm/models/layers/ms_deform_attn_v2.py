"""Multi-scale deformable cross-attention, RT-DETRv2 flavour, in pure PyTorch."""
import math
from typing import List, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .precision import compute_dtype


def ms_deform_attn_v2_core(value: torch.Tensor,
                           spatial_shapes: Sequence[Tuple[int, int]],
                           sampling_locations: torch.Tensor,
                           attention_weights: torch.Tensor,
                           num_points_list: Sequence[int],
                           method: str = 'default') -> torch.Tensor:
    """Sample ``value`` at the given locations and sum with the given weights.

    Args:
        value (Tensor): Flattened multi-level values, shape
            (B, sum(H_l*W_l), num_heads, head_dim).
        spatial_shapes (Sequence[tuple[int, int]]): (H_l, W_l) of every level,
            in the order the levels are flattened into ``value``.
        sampling_locations (Tensor): Normalised (x, y) locations in [0, 1] of
            the input image, shape (B, num_queries, num_heads, sum(P_l), 2);
            the points of level l are the l-th chunk of size P_l.
        attention_weights (Tensor): Weights already soft-maxed jointly over
            all levels' points, shape (B, num_queries, num_heads, sum(P_l)).
        num_points_list (Sequence[int]): P_l, sampling points per level.
        method (str): ``'default'`` uses bilinear ``F.grid_sample``
            (zeros padding, align_corners=False). ``'discrete'`` reads pixel
            ``int(loc * size + 0.5)`` per axis (as the official code and
            transformers: ``loc * size`` rounded half up, which is half a
            pixel off the bilinear convention's pixel centres), clamped to
            the map, and gathers it by indexing (no GridSample op, for
            older TensorRT).

    Returns:
        Tensor: Shape (B, num_queries, num_heads * head_dim).

    NOTE: in ``discrete`` mode the official code clamps both x and y to
    ``H_l - 1`` (wrong for non-square maps). We clamp x to ``W_l - 1`` and y to
    ``H_l - 1`` as transformers does; both agree on square inputs.
    """
    bs, _, num_heads, head_dim = value.shape
    num_queries = sampling_locations.shape[1]
    # (B*heads, head_dim, sum(HW)) split per level.
    value_list = value.permute(0, 2, 3, 1).flatten(0, 1).split(
        [h * w for h, w in spatial_shapes], dim=-1)
    if method == 'default':
        grids = 2 * sampling_locations - 1
    elif method == 'discrete':
        grids = sampling_locations
    else:
        raise ValueError(f"cross_attn_method must be 'default' or 'discrete', got {method!r}")
    # (B*heads, num_queries, sum(P), 2) split per level.
    grids = grids.permute(0, 2, 1, 3, 4).flatten(0, 1).split(list(num_points_list), dim=-2)

    if method == 'discrete':
        # (w, h) of every level, one tensor per call; at least fp32 so that
        # the pixel index is exact (a bf16 grid times the map size would be
        # rounded to 8 bits; the official code multiplies in the grid's dtype)
        level_scales = torch.tensor([[w, h] for h, w in spatial_shapes], device=value.device,
                                    dtype=compute_dtype(grids[0].dtype))
    sampled = []
    for level, (h, w) in enumerate(spatial_shapes):
        value_l = value_list[level].reshape(bs * num_heads, head_dim, h, w)
        grid_l = grids[level]
        if method == 'default':
            # (B*heads, head_dim, num_queries, P_l)
            sampled.append(F.grid_sample(value_l, grid_l, mode='bilinear',
                                         padding_mode='zeros', align_corners=False))
        else:
            scale = level_scales[level]
            coord = (grid_l * scale + 0.5).to(torch.int64)
            x = coord[..., 0].clamp(0, w - 1)
            y = coord[..., 1].clamp(0, h - 1)
            flat_idx = (y * w + x).reshape(bs * num_heads, 1, -1)
            gathered = value_l.flatten(2).gather(
                2, flat_idx.expand(-1, head_dim, -1))
            sampled.append(gathered.reshape(bs * num_heads, head_dim, num_queries,
                                            num_points_list[level]))
    weights = attention_weights.permute(0, 2, 1, 3).reshape(
        bs * num_heads, 1, num_queries, sum(num_points_list))
    out = (torch.cat(sampled, dim=-1) * weights).sum(-1)
    return out.reshape(bs, num_heads * head_dim, num_queries).transpose(1, 2)


class MSDeformableAttentionV2(nn.Module):
    """RT-DETRv2 multi-scale deformable attention with per-level point counts.

    Parameter names equal the official ``MSDeformableAttention``
    (``sampling_offsets``, ``attention_weights``, ``value_proj``,
    ``output_proj`` and the buffer ``num_points_scale``).

    Args:
        hidden_dim (int): Channels of queries and values.
        num_heads (int): Attention heads.
        num_levels (int): Feature levels sampled.
        num_points (int | list[int]): Sampling points per level; an int means
            the same number on every level.
        method (str): ``'default'`` (grid_sample) or ``'discrete'``; in
            discrete mode ``sampling_offsets`` is frozen as in the official code.
        offset_scale (float): Offsets are ``raw / P_l * ref_wh * offset_scale``.
    """

    def __init__(self, hidden_dim: int = 256, num_heads: int = 8, num_levels: int = 3,
                 num_points: Union[int, List[int]] = 4, method: str = 'default',
                 offset_scale: float = 0.5) -> None:
        super().__init__()
        if hidden_dim % num_heads:
            raise ValueError(f'hidden_dim {hidden_dim} is not divisible by num_heads {num_heads}')
        if isinstance(num_points, int):
            num_points = [num_points] * num_levels
        if len(num_points) != num_levels:
            raise ValueError(f'num_points {num_points} must give one count per level '
                             f'({num_levels} levels)')
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.num_levels = num_levels
        self.num_points_list = list(num_points)
        self.method = method
        self.offset_scale = offset_scale
        total_points = sum(self.num_points_list)
        self.register_buffer(
            'num_points_scale',
            torch.tensor([1.0 / n for n in self.num_points_list for _ in range(n)],
                         dtype=torch.float32))
        self.sampling_offsets = nn.Linear(hidden_dim, num_heads * total_points * 2)
        self.attention_weights = nn.Linear(hidden_dim, num_heads * total_points)
        self.value_proj = nn.Linear(hidden_dim, hidden_dim)
        self.output_proj = nn.Linear(hidden_dim, hidden_dim)
        self.reset_parameters()
        if method == 'discrete':
            self.sampling_offsets.requires_grad_(False)

    def reset_parameters(self) -> None:
        """Official init: offsets start on a ring of directions, one per head,
        at distances 1..P_l; uniform attention weights; Xavier projections."""
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.num_heads, dtype=torch.float32) * (
            2.0 * math.pi / self.num_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True).values
        grid = grid.reshape(self.num_heads, 1, 2).tile([1, sum(self.num_points_list), 1])
        scaling = torch.cat([torch.arange(1, n + 1) for n in self.num_points_list])
        grid = grid * scaling.reshape(1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(self, query: torch.Tensor, reference_boxes: torch.Tensor,
                value: torch.Tensor,
                spatial_shapes: Sequence[Tuple[int, int]]) -> torch.Tensor:
        """Cross-attend from queries to multi-scale values.

        Args:
            query (Tensor): Queries (position embedding already added),
                shape (B, num_queries, hidden_dim).
            reference_boxes (Tensor): Reference boxes, cxcywh normalised to
                the input image, shape (B, num_queries, 1, 4).
            value (Tensor): Flattened multi-level memory, shape
                (B, sum(H_l*W_l), hidden_dim).
            spatial_shapes (Sequence[tuple[int, int]]): (H_l, W_l) per level.

        Returns:
            Tensor: Shape (B, num_queries, hidden_dim).
        """
        bs, num_queries, _ = query.shape
        total_points = sum(self.num_points_list)
        value = self.value_proj(value).reshape(
            bs, value.shape[1], self.num_heads, self.hidden_dim // self.num_heads)
        offsets = self.sampling_offsets(query).reshape(
            bs, num_queries, self.num_heads, total_points, 2)
        weights = self.attention_weights(query).reshape(
            bs, num_queries, self.num_heads, total_points).softmax(-1)
        # (B, Q, 1, 1, 2) centre and size, broadcast over heads and points.
        ref_xy = reference_boxes[:, :, None, :, :2]
        ref_wh = reference_boxes[:, :, None, :, 2:]
        scale = self.num_points_scale.to(query.dtype).unsqueeze(-1)
        locations = ref_xy + offsets * scale * ref_wh * self.offset_scale
        out = ms_deform_attn_v2_core(value, spatial_shapes, locations, weights,
                                     self.num_points_list, self.method)
        return self.output_proj(out)
