"""Encoder anchors of RT-DETR(v2): one box per feature-map cell."""
from typing import Sequence, Tuple

import torch

from .precision import compute_dtype, value_dtype


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
        device: Of the returned anchors.
        dtype (torch.dtype): Of the features the anchors go with. The anchors
            and the mask are computed in fp32 at least (float64 for float64)
            and the anchors returned in :func:`.precision.value_dtype`: fp32
            when ``dtype`` is fp16 / bf16 only because autocast is on, else
            ``dtype`` (a ``.half()`` model gets fp16 anchor logits, its valid
            mask still computed in fp32).

    Returns:
        tuple[Tensor, Tensor]: ``anchors`` (1, sum(HW), 4): logits of cxcywh
        normalised boxes, ``+inf`` where invalid; ``valid_mask``
        (1, sum(HW), 1) bool.

    NOTE: never computed in fp16 / bf16, and fp32 under autocast, as the
    official code (fp32 anchors): in bf16 the last row and column of the
    stride-16 map round onto ``1 - eps`` and turn invalid (75-95 tokens per image at 608-768 px), and the anchor
    logits shift by up to 0.12, so an autocast run would train on other
    tokens than its fp32 validation.
    """
    out_dtype = value_dtype(dtype, device)
    dtype = compute_dtype(out_dtype)
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
    return anchors.to(out_dtype), valid_mask
