"""Encoder anchors of RT-DETR(v2): one box per feature-map cell."""
from typing import Sequence, Tuple

import torch


def generate_anchors(spatial_shapes: Sequence[Tuple[int, int]],
                     grid_size: float = 0.05, eps: float = 1e-2,
                     device=None, dtype: torch.dtype = torch.float32
                     ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Anchors at every cell centre with size ``grid_size * 2**level``.

    Args:
        spatial_shapes (Sequence[tuple[int, int]]): (H_l, W_l) per level.
        grid_size (float): Anchor width/height on level 0 (normalised).
        eps (float): Anchors with any coordinate outside (eps, 1 - eps) are
            invalid.
        device, dtype: Of the returned anchors.

    Returns:
        tuple[Tensor, Tensor]: ``anchors`` (1, sum(HW), 4): logits of cxcywh
        normalised boxes, ``+inf`` where invalid; ``valid_mask``
        (1, sum(HW), 1) bool.
    """
    all_anchors = []
    for level, (h, w) in enumerate(spatial_shapes):
        ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=dtype),
                                torch.arange(w, device=device, dtype=dtype), indexing='ij')
        centres = torch.stack([(xs + 0.5) / w, (ys + 0.5) / h], -1)
        sizes = torch.full_like(centres, grid_size * 2.0 ** level)
        all_anchors.append(torch.cat([centres, sizes], -1).reshape(1, h * w, 4))
    anchors = torch.cat(all_anchors, 1)
    valid_mask = ((anchors > eps) & (anchors < 1 - eps)).all(-1, keepdim=True)
    anchors = torch.log(anchors / (1 - anchors))
    anchors = anchors.masked_fill(~valid_mask, float('inf'))
    return anchors, valid_mask
