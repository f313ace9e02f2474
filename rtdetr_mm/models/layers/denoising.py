"""Contrastive denoising (CDN) query groups for RT-DETR(v2) training."""
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence
from mmdet.models.layers.transformer import inverse_sigmoid
from mmdet.structures.bbox import bbox_cxcywh_to_xyxy, bbox_xyxy_to_cxcywh

from ..task_modules.assigners.batched_hungarian_assigner import MatchedPairs
from .precision import compute_dtype


#: Official denoising settings: the keys ``RTDETRv2Head``'s ``dn_cfg`` takes
#: (the keyword arguments of :func:`build_denoising_queries`) and the values
#: of those it leaves out.
DN_CFG_DEFAULTS = dict(num_denoising=100, label_noise_ratio=0.5, box_noise_scale=1.0)


def resolve_dn_cfg(dn_cfg: Optional[dict]) -> dict:
    """``dn_cfg`` completed with :data:`DN_CFG_DEFAULTS`; None disables
    denoising (``num_denoising=0``). Unknown keys are an error, so that a
    misspelt setting does not silently keep its default."""
    if dn_cfg is None:
        return dict(DN_CFG_DEFAULTS, num_denoising=0)
    unknown = sorted(set(dn_cfg) - set(DN_CFG_DEFAULTS))
    if unknown:
        raise ValueError(f'dn_cfg has unknown keys {unknown}; expected some of '
                         f'{sorted(DN_CFG_DEFAULTS)}')
    return dict(DN_CFG_DEFAULTS, **dn_cfg)


@dataclass
class DenoisingMeta:
    """Bookkeeping of one batch's denoising queries.

    Attributes:
        positive_idx (list[Tensor]): Per image, the indices (among the
            ``num_dn_queries`` denoising queries) of the positive queries, in
            the order group 0 GT 0..n-1, group 1 GT 0..n-1, ...; shape
            (num_gt_i * num_groups,), long, on the host (they follow from the
            GT counts alone).
        num_groups (int): Denoising groups (each = positives + negatives).
        num_dn_queries (int): Denoising queries placed before the matching
            queries (``2 * max_gt * num_groups``).
    """
    positive_idx: List[torch.Tensor]
    num_groups: int
    num_dn_queries: int

    def matched_pairs(self, num_gts: Sequence[int], num_stages: int,
                      device: torch.device) -> MatchedPairs:
        """The fixed (query, GT) pairs of the positive queries, the same for
        each of ``num_stages`` outputs (decoder layers), moved to ``device``
        in one copy. GT indices count in the GTs of all images concatenated."""
        gt_offsets = np.cumsum([0] + list(num_gts[:-1]))
        per_stage = []
        for image, (idx, n) in enumerate(zip(self.positive_idx, num_gts)):
            gt_idx = np.tile(np.arange(n), self.num_groups) + gt_offsets[image]
            per_stage.append(np.stack([np.full(len(gt_idx), image), idx.numpy(), gt_idx]))
        per_stage = np.concatenate(per_stage, 1) if per_stage else np.zeros((3, 0), np.int64)
        stages = np.repeat(np.arange(num_stages), per_stage.shape[1])[None]
        pairs = np.concatenate([stages, np.tile(per_stage, num_stages)]).astype(np.int64)
        return MatchedPairs.from_host(pairs, [per_stage.shape[1]] * num_stages, device)


def build_denoising_queries(
        gt_labels: Sequence[torch.Tensor], gt_boxes: Sequence[torch.Tensor],
        num_classes: int, num_queries: int, class_embed: nn.Embedding,
        num_denoising: int = 100, label_noise_ratio: float = 0.5,
        box_noise_scale: float = 1.0
) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor], Optional[torch.Tensor],
           Optional[DenoisingMeta]]:
    """Build noised GT queries, their attention mask and metadata.

    Layout: ``num_groups`` groups of ``2 * max_gt`` queries; in each, the
    positives (GT 0..max_gt-1 of the image, then padding) and the negatives
    (the same GTs, noised further).

    Args:
        gt_labels (Sequence[Tensor]): Per image, labels in [0, num_classes),
            shape (n_i,).
        gt_boxes (Sequence[Tensor]): Per image, cxcywh normalised, (n_i, 4).
        num_classes (int): Classes; ``num_classes`` is the padding label.
        num_queries (int): Matching queries that follow the denoising ones.
        class_embed (nn.Embedding): (num_classes + 1, d) label embedding,
            padding_idx = num_classes.
        num_denoising (int): Budget of denoising queries; groups =
            max(1, num_denoising // max_gt).
        label_noise_ratio (float): A GT label is replaced by a random class
            with probability ``label_noise_ratio / 2``.
        box_noise_scale (float): Corner noise relative to half the box size;
            positives move by < 1, negatives by [1, 2) of it.

    Returns:
        tuple: ``(query_content (B, Ndn, d), query_boxes_logit (B, Ndn, 4),
        attn_mask (Ndn + num_queries,)*2 bool, True = blocked, meta)``, or all
        ``None`` when ``num_denoising <= 0``. Content and box logits are in
        the dtype of ``class_embed`` (fp32 under autocast; float64 for a
        float64 model; the boxes at least fp32), on its device.

    NOTE: when the batch holds no GT at all we still build one group of two
    padding queries (label = padding, box = 0) instead of skipping
    denoising, as the official code does since its fix for DDP hangs
    (lyuwenyu/RT-DETR#684): every rank then runs the same graph and every
    parameter gets a gradient.

    NOTE: mmdet's ``CdnQueryGenerator`` (DINO) has the same group count,
    label flip probability and corner-noise formula, but is not reused:
    its label embedding has ``num_classes`` rows and no padding row (the
    official ``denoising_class_embed`` has ``num_classes + 1``, so keys and
    shapes would change); it draws the noise on the concatenated GTs and
    scatters them into the padded layout, with zero box logits in the
    padding, while the official code draws it on the padded (B, max_gt)
    layout (other random streams, padding boxes 0); it takes the box logits
    with ``inverse_sigmoid(eps=1e-3)`` (official: 1e-5); it fixes the number
    of matching queries when built (ours: ``min(num_queries, tokens)`` per
    batch); it builds no query for a batch without GT (see the NOTE above);
    and it reads pixel xyxy boxes from the data samples, normalised by
    ``img_shape`` (ours: cxcywh normalised to ``batch_input_shape``).
    """
    if num_denoising <= 0:
        return None, None, None, None
    num_gts = [len(labels) for labels in gt_labels]
    device = class_embed.weight.device
    # The box noise in the parameters' dtype (fp32 under autocast, float64
    # for a float64 model), never below fp32.
    dtype = compute_dtype(class_embed.weight.dtype)
    max_gt = max([0] + num_gts)  # (not max(default=): torch.compile traces this form)
    # Empty batch: one group of 2 padding queries (see NOTE above).
    num_groups = max(num_denoising // max_gt, 1) if max_gt else 1
    max_gt = max(max_gt, 1)

    query_class, query_boxes, pad_gt_mask, negative = _grouped_gts(
        gt_labels, gt_boxes, num_classes, max_gt, num_groups, device, dtype)
    # Group g's positives sit at g * 2 * max_gt + (0 .. n_i - 1): known on the host.
    group_starts = torch.arange(num_groups) * 2 * max_gt
    positive_idx = [(group_starts[:, None] + torch.arange(n)).flatten() for n in num_gts]
    num_dn = 2 * max_gt * num_groups

    if label_noise_ratio > 0:
        query_class = _noisy_labels(query_class, pad_gt_mask, num_classes, label_noise_ratio,
                                    dtype)
    if box_noise_scale > 0:
        query_boxes = _noisy_boxes(query_boxes, negative, box_noise_scale)
    boxes_logit = inverse_sigmoid(query_boxes)
    content = class_embed(query_class)
    attn_mask = _denoising_attn_mask(num_dn, num_queries, 2 * max_gt, num_groups, device)
    meta = DenoisingMeta(positive_idx=list(positive_idx), num_groups=num_groups,
                         num_dn_queries=num_dn)
    return content, boxes_logit, attn_mask, meta


def _grouped_gts(gt_labels: Sequence[torch.Tensor], gt_boxes: Sequence[torch.Tensor],
                 num_classes: int, max_gt: int, num_groups: int, device: torch.device,
                 dtype: torch.dtype = torch.float32
                 ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """GTs padded to ``max_gt`` per image and repeated ``2 * num_groups``
    times (every group = max_gt positives, then max_gt negatives).

    Returns:
        tuple: labels (B, Ndn) long (padding label ``num_classes``); cxcywh
        boxes (B, Ndn, 4) in ``dtype`` (padding 0); real-GT mask (B, Ndn)
        bool; negative mask (B, Ndn, 1) in ``dtype``, 1 on negatives.
        Ndn = 2 * max_gt * num_groups.
    """
    bs = len(gt_labels)
    pad = [0, max_gt - max([0] + [len(labels) for labels in gt_labels])]
    query_class = F.pad(pad_sequence(list(gt_labels), batch_first=True, padding_value=num_classes),
                        pad, value=num_classes).to(device=device, dtype=torch.long)
    query_boxes = F.pad(pad_sequence(list(gt_boxes), batch_first=True), [0, 0] + pad)
    query_boxes = query_boxes.to(device=device, dtype=dtype)
    num_gts = torch.tensor([len(labels) for labels in gt_labels]).to(device)
    pad_gt_mask = torch.arange(max_gt, device=device) < num_gts[:, None]
    negative = torch.zeros((bs, 2 * max_gt, 1), device=device, dtype=dtype)
    negative[:, max_gt:] = 1
    return (query_class.tile(1, 2 * num_groups), query_boxes.tile(1, 2 * num_groups, 1),
            pad_gt_mask.tile(1, 2 * num_groups), negative.tile(1, num_groups, 1))


def _noisy_labels(query_class: torch.Tensor, pad_gt_mask: torch.Tensor, num_classes: int,
                  label_noise_ratio: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Replace each real GT label (B, Ndn) by a uniformly drawn class with
    probability ``label_noise_ratio / 2`` (drawn in ``dtype``); padding keeps
    its label."""
    flip = torch.rand(query_class.shape, device=query_class.device,
                      dtype=dtype) < label_noise_ratio * 0.5
    random_labels = torch.randint_like(query_class, 0, num_classes)
    return torch.where(flip & pad_gt_mask, random_labels, query_class)


def _noisy_boxes(query_boxes: torch.Tensor, negative: torch.Tensor,
                 box_noise_scale: float) -> torch.Tensor:
    """Move each corner of the cxcywh normalised boxes (B, Ndn, 4) by a random
    sign times ``m * box_noise_scale`` half-sizes, m in [0, 1) for positives
    and [1, 2) where ``negative`` (B, Ndn, 1) is 1; clipped to [0, 1] as
    xyxy, returned cxcywh."""
    corners = bbox_cxcywh_to_xyxy(query_boxes)
    half_wh = (query_boxes[..., 2:] * 0.5).tile(1, 1, 2) * box_noise_scale
    sign = torch.randint_like(query_boxes, 0, 2) * 2.0 - 1.0
    magnitude = torch.rand_like(query_boxes)
    magnitude = (magnitude + 1.0) * negative + magnitude * (1 - negative)
    corners = (corners + magnitude * sign * half_wh).clip(min=0.0, max=1.0)
    return bbox_xyxy_to_cxcywh(corners)


def _denoising_attn_mask(num_dn: int, num_queries: int, group_size: int, num_groups: int,
                         device: torch.device) -> torch.Tensor:
    """Self-attention mask (num_dn + num_queries,)*2 bool, True = blocked:
    matching queries cannot see denoising ones, and the ``num_groups``
    denoising groups of ``group_size`` queries cannot see each other."""
    size = num_dn + num_queries
    group = torch.arange(num_dn, device=device) // group_size
    attn_mask = torch.zeros((size, size), dtype=torch.bool, device=device)
    attn_mask[num_dn:, :num_dn] = True
    attn_mask[:num_dn, :num_dn] = group[:, None] != group[None, :]
    return attn_mask
