"""Decoding of RT-DETRv2's outputs into detections: the one post-processor
that :meth:`RTDETRv2Head.predict_by_feat` and the ONNX export share."""
from typing import Optional, Tuple

import torch

from .precision import upcast


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
        (B, K, 4) xyxy pixels, ``scores`` (B, K), sorted by score; boxes and
        scores in fp32 (float64 for float64 inputs: at least fp32).

    NOTE: like the official post-processor and unlike mmdet's DETR heads,
    boxes are not clipped to the image. The query index is the truncating
    division of the flat index by C (equal to the floor: indices are >= 0),
    one integer Div in ONNX.
    """
    scores = upcast(cls_logits).sigmoid().flatten(1)
    top_scores, top_idx = scores.topk(min(max_per_img, scores.shape[1]), dim=1)
    query_idx = torch.div(top_idx, num_classes, rounding_mode='trunc')
    labels = top_idx - query_idx * num_classes
    picked = upcast(boxes_cxcywh).gather(1, query_idx.unsqueeze(-1).repeat(1, 1, 4))
    centre, size = picked[..., :2], picked[..., 2:]
    xyxy = torch.cat([centre - 0.5 * size, centre + 0.5 * size], -1)
    xyxy = xyxy * sizes_wh.to(xyxy.dtype).repeat(1, 2).unsqueeze(1)
    if scale_factors is not None:
        xyxy = xyxy / scale_factors.to(xyxy.dtype).repeat(1, 2).unsqueeze(1)
    return labels, xyxy, top_scores


# ----------------------------------------------------- duplicate control
#: ``test_cfg.nms.type`` values: plain greedy NMS only. Soft-NMS and
#: ``nms_match`` (which ``batched_nms`` also takes) rescore or group boxes
#: and have no ONNX operator, so the export could not apply them.
NMS_TYPES = ('nms', )
NMS_KEYS = ('type', 'iou_threshold', 'class_agnostic')


class DuplicateControlError(ValueError):
    """``test_cfg.score_thr`` / ``test_cfg.nms`` out of their valid values;
    the message names the key, the value and what is valid."""


def duplicate_control(test_cfg: Optional[dict], key: str = 'model.test_cfg'
                      ) -> Tuple[Optional[float], Optional[dict]]:
    """Read and check the optional duplicate control of ``test_cfg``.

    Args:
        test_cfg (dict, optional): The head's ``test_cfg``: ``score_thr``
            (float in [0, 1], or None) and ``nms`` (None, or
            ``dict(type='nms', iou_threshold=T, class_agnostic=False)`` with
            T in (0, 1], as mmcv's ``batched_nms`` takes it).
        key (str): Config key of ``test_cfg``, named in errors.

    Returns:
        tuple[float | None, dict | None]: ``score_thr`` and the ``nms``
        config for ``batched_nms`` (``class_agnostic`` filled in, False by
        default); (None, None) when both are off (the default).

    Raises:
        DuplicateControlError: a value out of range or an unknown key.
    """
    test_cfg = test_cfg or {}
    score_thr, nms = test_cfg.get('score_thr'), test_cfg.get('nms')
    if score_thr is not None and (isinstance(score_thr, bool)
                                  or not isinstance(score_thr, (int, float))
                                  or not 0 <= score_thr <= 1):
        raise DuplicateControlError(
            f'{key}.score_thr={score_thr!r}: must be a number in [0, 1] (detections '
            'scoring above it are kept) or None (no threshold, the default)')
    if nms is None:
        return (None if score_thr is None else float(score_thr)), None
    if not isinstance(nms, dict):
        raise DuplicateControlError(
            f"{key}.nms={nms!r}: must be None (the default) or "
            "dict(type='nms', iou_threshold=0.7, class_agnostic=False)")
    unknown = sorted(set(nms) - set(NMS_KEYS))
    if unknown:
        raise DuplicateControlError(f'{key}.nms has unknown keys {unknown}; valid: '
                                    f'{list(NMS_KEYS)}')
    if nms.get('type', 'nms') not in NMS_TYPES:
        raise DuplicateControlError(
            f"{key}.nms.type={nms.get('type')!r}: must be one of {list(NMS_TYPES)} "
            '(greedy NMS, which the ONNX export applies too)')
    iou = nms.get('iou_threshold')
    if isinstance(iou, bool) or not isinstance(iou, (int, float)) or not 0 < iou <= 1:
        raise DuplicateControlError(
            f'{key}.nms.iou_threshold={iou!r}: must be a number in (0, 1] (a box '
            'overlapping a higher-scoring one by more is removed), e.g. '
            "nms=dict(type='nms', iou_threshold=0.7)")
    agnostic = nms.get('class_agnostic', False)
    if not isinstance(agnostic, bool):
        raise DuplicateControlError(f'{key}.nms.class_agnostic={agnostic!r}: must be True '
                                    '(across classes) or False (within a class)')
    return ((None if score_thr is None else float(score_thr)),
            dict(type='nms', iou_threshold=float(iou), class_agnostic=agnostic))


def keep_mask(labels: torch.Tensor, boxes: torch.Tensor, scores: torch.Tensor,
              score_thr: Optional[float] = None, nms_cfg: Optional[dict] = None
              ) -> torch.Tensor:
    """Which of the top-K detections survive ``score_thr`` and NMS.

    Args:
        labels (Tensor): (B, K) int64, from :func:`topk_detections`.
        boxes (Tensor): (B, K, 4) xyxy pixels (of the original image when
            rescaled: NMS runs on the boxes the user gets).
        scores (Tensor): (B, K), sorted by score.
        score_thr (float, optional): Keep ``scores > score_thr`` (mmdet's
            ``multiclass_nms`` rule).
        nms_cfg (dict, optional): ``type='nms'``, ``iou_threshold``,
            ``class_agnostic``; see :func:`duplicate_control`.

    Returns:
        Tensor: (B, K) bool.

    Eager, this is mmcv's ``batched_nms`` per image (class-aware by its
    per-class coordinate offset). During ``torch.onnx.export`` the same
    offset is computed in the graph and one batched ONNX
    ``NonMaxSuppression`` replaces the per-image loop (a dynamic batch
    cannot be looped over in a traced graph).

    NOTE: the threshold and NMS commute: a box is only ever suppressed by a
    higher-scoring one, so whether NMS runs before or after the threshold,
    the same boxes above it survive; NMS runs on all K boxes here so that
    the offset (from the largest coordinate of the K boxes) is the same in
    both paths.
    """
    keep = torch.ones_like(scores, dtype=torch.bool)
    if score_thr is not None:
        keep = scores > score_thr
    if nms_cfg is None:
        return keep
    if torch.onnx.is_in_onnx_export():
        boxes_for_nms = boxes
        if not nms_cfg['class_agnostic']:  # batched_nms's offset, per image
            max_coordinate = boxes.amax(dim=(1, 2), keepdim=True)
            boxes_for_nms = boxes + (labels.to(boxes.dtype) * (max_coordinate[..., 0] + 1)
                                     ).unsqueeze(-1)
        selected = _NonMaxSuppression.apply(boxes_for_nms, scores,
                                            float(nms_cfg['iou_threshold']))
        survivors = torch.zeros_like(keep)
        survivors[selected[:, 0], selected[:, 2]] = True
        return keep & survivors
    from mmcv.ops import batched_nms
    survivors = torch.zeros_like(keep)
    for img in range(scores.shape[0]):
        _, kept = batched_nms(boxes[img], scores[img], labels[img], nms_cfg)
        survivors[img, kept] = True
    return keep & survivors


def pad_kept(labels: torch.Tensor, boxes: torch.Tensor, scores: torch.Tensor,
             keep: torch.Tensor
             ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Move the kept detections to the front, in their order (by score),
    and pad the rest: fixed shapes for a traced graph.

    Args:
        labels, boxes, scores (Tensor): (B, K), (B, K, 4), (B, K).
        keep (Tensor): (B, K) bool from :func:`keep_mask`.

    Returns:
        tuple[Tensor, Tensor, Tensor, Tensor]: ``labels`` (B, K) int64,
        -1 in padding; ``boxes`` (B, K, 4), 0 in padding; ``scores`` (B, K),
        0 in padding; ``num_dets`` (B,) int64, the kept count: row ``b``
        holds detections ``[:num_dets[b]]``.
    """
    k = scores.shape[1]
    position = torch.arange(k, device=scores.device).unsqueeze(0)
    # distinct keys (kept: 0..K-1, dropped: K..2K-1), so no tie to break
    order = torch.where(keep, position, position + k).argsort(dim=1)
    num_dets = keep.sum(1)
    valid = position < num_dets.unsqueeze(1)
    labels = torch.where(valid, labels.gather(1, order), torch.full_like(labels, -1))
    scores = torch.where(valid, scores.gather(1, order), torch.zeros_like(scores))
    boxes = boxes.gather(1, order.unsqueeze(-1).repeat(1, 1, 4))
    boxes = torch.where(valid.unsqueeze(-1), boxes, torch.zeros_like(boxes))
    return labels, boxes, scores, num_dets


class _NonMaxSuppression(torch.autograd.Function):
    """Greedy NMS over a batch: ONNX ``NonMaxSuppression`` in an exported
    graph, mmcv's ``nms`` per image when traced.

    NOTE: mmcv 2.x dropped the ONNX symbolic of its ``nms`` and
    torchvision's needs torchvision; an autograd Function with a
    ``symbolic`` is torch's public way to emit one ONNX operator.

    Args (forward):
        boxes (Tensor): (B, K, 4) xyxy (class offsets already added).
        scores (Tensor): (B, K).
        iou_threshold (float): Suppress IoU > it.

    Returns:
        Tensor: (M, 3) int64 ``[image, 0, box]`` of the kept boxes, the
        ONNX operator's ``selected_indices``.
    """

    @staticmethod
    def forward(ctx, boxes: torch.Tensor, scores: torch.Tensor,
                iou_threshold: float) -> torch.Tensor:
        from mmcv.ops import nms
        selected = []
        for img in range(boxes.shape[0]):
            _, kept = nms(boxes[img], scores[img], iou_threshold)
            kept = kept.to(torch.int64)
            selected.append(torch.stack([torch.full_like(kept, img),
                                         torch.zeros_like(kept), kept], 1))
        return torch.cat(selected)

    @staticmethod
    def symbolic(g, boxes, scores, iou_threshold: float):
        axes = g.op('Constant', value_t=torch.tensor([1], dtype=torch.int64))
        # at most every box of the K (2**31 - 1: no limit besides K)
        max_out = g.op('Constant', value_t=torch.tensor([2**31 - 1], dtype=torch.int64))
        iou = g.op('Constant', value_t=torch.tensor([iou_threshold], dtype=torch.float32))
        return g.op('NonMaxSuppression', boxes, g.op('Unsqueeze', scores, axes), max_out, iou)
