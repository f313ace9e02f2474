"""Decoding of RT-DETRv2's outputs into detections: the one post-processor
that :meth:`RTDETRv2Head.predict_by_feat` and the ONNX export share."""
from typing import Optional, Tuple

import torch


def topk_detections(cls_logits: torch.Tensor, boxes_cxcywh: torch.Tensor,
                    sizes_wh: torch.Tensor, num_classes: int, max_per_img: int,
                    scale_factors: Optional[torch.Tensor] = None
                    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-K over the sigmoid scores of all (query, class) pairs, batched and
    traceable (the official post-processor's ``use_focal_loss`` branch).

    Args:
        cls_logits (Tensor): (B, Nq, C) class logits of the evaluated layer.
        boxes_cxcywh (Tensor): (B, Nq, 4) boxes, cxcywh normalised to [0, 1]
            of the network input.
        sizes_wh (Tensor): (B, 2) or (1, 2) (w, h) in pixels that the
            normalised boxes are scaled by (the network input, or the
            original image for an exported model).
        num_classes (int): C, as a Python int (a constant in a traced graph).
        max_per_img (int): K, detections kept per image (at most Nq * C).
        scale_factors (Tensor, optional): (B, 2) (w, h) resize factors from
            the original image to the network input; the boxes are divided by
            them (mmdet's ``rescale``).

    Returns:
        tuple[Tensor, Tensor, Tensor]: ``labels`` (B, K) int64, ``boxes``
        (B, K, 4) xyxy pixels, ``scores`` (B, K) float32, sorted by score.

    NOTE: like the official post-processor and unlike mmdet's DETR heads,
    boxes are not clipped to the image. The query index is the truncating
    division of the flat index by C (equal to the floor: indices are >= 0),
    one integer Div in ONNX.
    """
    scores = cls_logits.float().sigmoid().flatten(1)
    top_scores, top_idx = scores.topk(min(max_per_img, scores.shape[1]), dim=1)
    query_idx = torch.div(top_idx, num_classes, rounding_mode='trunc')
    labels = top_idx - query_idx * num_classes
    picked = boxes_cxcywh.float().gather(1, query_idx.unsqueeze(-1).repeat(1, 1, 4))
    centre, size = picked[..., :2], picked[..., 2:]
    xyxy = torch.cat([centre - 0.5 * size, centre + 0.5 * size], -1)
    xyxy = xyxy * sizes_wh.to(xyxy.dtype).repeat(1, 2).unsqueeze(1)
    if scale_factors is not None:
        xyxy = xyxy / scale_factors.to(xyxy.dtype).repeat(1, 2).unsqueeze(1)
    return labels, xyxy, top_scores
