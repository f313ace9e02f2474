"""Hungarian matching of every output of a training step at once: the costs
of all decoder layers and the encoder top-k, for every image, on the device
in one batched computation, handed to the host once."""
from typing import List, NamedTuple, Sequence

import numpy as np
import torch
from mmdet.models.task_modules.assigners import HungarianAssigner
from mmdet.models.task_modules.assigners.match_cost import (BBoxL1Cost, FocalLossCost,
                                                            IoUCost)
from mmdet.registry import TASK_UTILS
from mmdet.structures.bbox import bbox_cxcywh_to_xyxy, bbox_overlaps
from scipy.optimize import linear_sum_assignment

from ...layers.precision import upcast

#: Cost that replaces a non-finite entry before scipy sees it (see the NOTE
#: of :meth:`RTDETRv2HungarianAssigner.match_batch`).
NONFINITE_COST = 1e8


class MatchedPairs(NamedTuple):
    """(prediction, GT) pairs of several outputs of a batch, sorted by stage.

    Attributes:
        stage (Tensor): (P,) long, which output (decoder layer, encoder
            top-k, ...) the pair belongs to.
        batch (Tensor): (P,) long, image index.
        query (Tensor): (P,) long, query index within the image.
        gt (Tensor): (P,) long, index of the GT in the GTs of all images
            concatenated (``torch.cat(gt_labels)``).
        counts (list[int]): Pairs per stage (on the host), ``sum == P``.
    """
    stage: torch.Tensor
    batch: torch.Tensor
    query: torch.Tensor
    gt: torch.Tensor
    counts: List[int]

    @classmethod
    def from_host(cls, pairs: np.ndarray, counts: List[int], device: torch.device
                  ) -> 'MatchedPairs':
        """From a (4, P) int64 array (stage, batch, query, gt) on the host,
        moved to ``device`` in one copy."""
        stage, batch, query, gt = torch.from_numpy(pairs).to(device)
        return cls(stage, batch, query, gt, counts)


@TASK_UTILS.register_module()
class RTDETRv2HungarianAssigner(HungarianAssigner):
    """mmdet's :class:`HungarianAssigner` (same ``match_costs``, same
    per-image :meth:`assign`) with :meth:`match_batch`, which matches all
    outputs of a training step at once.

    mmdet's per-image path computes a cost matrix, moves it to the host and
    solves it, once per image and output (decoder layer, encoder top-k): a
    device-to-host synchronisation each, 28 per step at batch 4 with 6
    decoder layers. :meth:`match_batch` computes every cost matrix of the
    step in one batched computation on the device, moves them to the host in
    one copy, solves them with scipy, and moves the pairs back in one copy.

    The batched costs are mmdet's definitions, read from the built cost
    objects (``weight``, ``alpha``, ``gamma``, ``eps``, ``box_format``,
    ``iou_mode``): :class:`FocalLossCost`, :class:`BBoxL1Cost`,
    :class:`IoUCost`; any other cost type is refused when built.

    NOTE: the batched costs are computed on boxes normalised to the network
    input, as the official matcher does; mmdet's per-image costs take pixel
    boxes and divide the L1 term by the image size. The L1 cost is the same
    either way and (G)IoU does not change under per-axis scaling, so both
    agree up to float rounding (``tests/test_models/test_task_modules``
    checks equal total cost against :meth:`assign`).

    Args:
        match_costs (list[dict]): The cost terms, as for mmdet's
            ``HungarianAssigner``.
    """

    def __init__(self, match_costs) -> None:
        super().__init__(match_costs)
        for cost in self.match_costs:
            if type(cost) not in (FocalLossCost, BBoxL1Cost, IoUCost):
                raise ValueError(
                    f'RTDETRv2HungarianAssigner: match_costs type {type(cost).__name__} has no '
                    'batched form; use FocalLossCost, BBoxL1Cost or IoUCost, or mmdet\'s '
                    'HungarianAssigner (per image)')
            if isinstance(cost, FocalLossCost) and cost.binary_input:
                raise ValueError('RTDETRv2HungarianAssigner: FocalLossCost(binary_input=True) '
                                 '(mask costs) has no batched form')

    def batched_cost(self, cls_scores: torch.Tensor, bbox_preds: torch.Tensor,
                     gt_labels: torch.Tensor, gt_boxes: torch.Tensor) -> torch.Tensor:
        """Weighted sum of the match costs of every (query, GT) pair.

        Args:
            cls_scores (Tensor): (S, B, Nq, C) logits of S outputs.
            bbox_preds (Tensor): (S, B, Nq, 4) cxcywh normalised.
            gt_labels (Tensor): (B, G) long, GTs padded to G per image (the
                padding's value does not matter, its columns are ignored).
            gt_boxes (Tensor): (B, G, 4) cxcywh normalised, padded alike.

        Returns:
            Tensor: (S, B, Nq, G) cost, fp32 (float64 for float64 inputs).
        """
        cls_scores, bbox_preds = upcast(cls_scores), upcast(bbox_preds)
        gt_boxes = upcast(gt_boxes)
        num_stages = cls_scores.shape[0]
        total = 0
        for cost in self.match_costs:
            if isinstance(cost, FocalLossCost):
                total = total + cost.weight * _focal_cost(cls_scores, gt_labels, cost)
            elif isinstance(cost, BBoxL1Cost):
                pred, gt = bbox_preds, gt_boxes
                if cost.box_format == 'xyxy':
                    pred, gt = bbox_cxcywh_to_xyxy(pred), bbox_cxcywh_to_xyxy(gt)
                gt = gt.unsqueeze(0).expand(num_stages, -1, -1, -1)
                total = total + cost.weight * torch.cdist(pred, gt, p=1)
            else:
                gt = bbox_cxcywh_to_xyxy(gt_boxes).unsqueeze(0).expand(num_stages, -1, -1, -1)
                overlaps = bbox_overlaps(bbox_cxcywh_to_xyxy(bbox_preds), gt,
                                         mode=cost.iou_mode)
                total = total - cost.weight * overlaps
        return total

    @torch.no_grad()
    def match_batch(self, cls_scores: torch.Tensor, bbox_preds: torch.Tensor,
                    gt_labels: Sequence[torch.Tensor], gt_boxes: Sequence[torch.Tensor]
                    ) -> MatchedPairs:
        """Optimal one-to-one matching of every output of every image.

        Args:
            cls_scores (Tensor): (S, B, Nq, C) logits of S outputs (e.g. the
                decoder layers and the encoder top-k).
            bbox_preds (Tensor): (S, B, Nq, 4) cxcywh normalised.
            gt_labels (Sequence[Tensor]): Per image (n_i,) long.
            gt_boxes (Sequence[Tensor]): Per image (n_i, 4) cxcywh normalised.

        Returns:
            MatchedPairs: ``min(Nq, n_i)`` pairs per output and image.

        NOTE: a non-finite cost (a NaN prediction) is replaced by
        :data:`NONFINITE_COST` instead of failing in scipy (mmdet's per-image
        path raises there): the loss of such a step is itself non-finite and
        the non-finite guard of the optimizer wrapper skips it, naming the
        loss terms.
        """
        num_stages, bs, num_queries = cls_scores.shape[:3]
        num_gts = [len(labels) for labels in gt_labels]
        max_gt = max([0] + num_gts)  # (not max(default=): torch.compile traces this form)
        device = cls_scores.device
        if max_gt == 0:
            return MatchedPairs.from_host(np.zeros((4, 0), np.int64), [0] * num_stages, device)
        padded_labels = torch.nn.utils.rnn.pad_sequence(list(gt_labels), batch_first=True)
        padded_boxes = torch.nn.utils.rnn.pad_sequence(list(gt_boxes), batch_first=True)
        cost = self.batched_cost(cls_scores, bbox_preds, padded_labels, padded_boxes)
        cost = torch.nan_to_num(cost, nan=NONFINITE_COST, posinf=NONFINITE_COST,
                                neginf=-NONFINITE_COST)
        return _solve_on_host(cost, num_gts, device)


@torch.compiler.disable
def _solve_on_host(cost: torch.Tensor, num_gts: List[int], device: torch.device
                   ) -> MatchedPairs:
    """Solve every (output, image) assignment of an (S, B, Nq, G) cost with
    scipy. Kept out of ``torch.compile`` as one piece (one graph break
    instead of one per scipy call)."""
    cost = cost.cpu().numpy()  # the one device-to-host copy of the step's matching
    gt_offsets = np.cumsum([0] + num_gts[:-1])
    chunks, counts = [], []
    for stage in range(cost.shape[0]):
        count = 0
        for image, n in enumerate(num_gts):
            if n == 0:
                continue
            rows, cols = linear_sum_assignment(cost[stage, image, :, :n])
            chunks.append(np.stack([np.full_like(rows, stage), np.full_like(rows, image),
                                    rows, cols + gt_offsets[image]]))
            count += len(rows)
        counts.append(count)
    return MatchedPairs.from_host(np.concatenate(chunks, 1).astype(np.int64), counts, device)


def _focal_cost(cls_scores: torch.Tensor, gt_labels: torch.Tensor,
                cost: FocalLossCost) -> torch.Tensor:
    """mmdet's ``FocalLossCost`` (unweighted) batched: (S, B, Nq, C) logits and
    (B, G) labels -> (S, B, Nq, G)."""
    prob = cls_scores.sigmoid()
    neg = -(1 - prob + cost.eps).log() * (1 - cost.alpha) * prob.pow(cost.gamma)
    pos = -(prob + cost.eps).log() * cost.alpha * (1 - prob).pow(cost.gamma)
    index = gt_labels.unsqueeze(0).unsqueeze(2).expand(
        cls_scores.shape[0], -1, cls_scores.shape[2], -1)
    return (pos - neg).gather(-1, index)
