"""The batched matcher against mmdet's HungarianAssigner run per image (the
independent reference): same cost matrices, same total cost of the
assignment, on random cases with an image without GT, more GT than queries,
duplicate GT boxes and tied costs."""
import numpy as np
import pytest
import torch
from mmdet.registry import TASK_UTILS
from mmdet.structures.bbox import bbox_cxcywh_to_xyxy
from mmengine.structures import InstanceData

import rtdetr_mm  # noqa: F401
from rtdetr_mm.models.task_modules.assigners import RTDETRv2HungarianAssigner

#: The configs' matching costs (configs/_base_/models/rtdetrv2_r50vd.py).
MATCH_COSTS = [dict(type='FocalLossCost', weight=2.0, alpha=0.25, gamma=2.0, eps=1e-8),
               dict(type='BBoxL1Cost', weight=5.0, box_format='xywh'),
               dict(type='IoUCost', iou_mode='giou', weight=2.0)]
NUM_CLASSES, NUM_QUERIES = 5, 8
SHAPE = (48, 80)  # (h, w): not square, so pixel and normalised boxes differ per axis


def _case(seed, num_gts, stages=3):
    """Random predictions of ``stages`` outputs and GTs with the hard cases:
    image 2 repeats its GT box (same label), image 3's queries are all equal
    (every assignment ties)."""
    gen = torch.Generator().manual_seed(seed)
    bs = len(num_gts)
    logits = torch.randn(stages, bs, NUM_QUERIES, NUM_CLASSES, generator=gen) * 2
    boxes = torch.cat([torch.rand(stages, bs, NUM_QUERIES, 2, generator=gen) * 0.6 + 0.2,
                       torch.rand(stages, bs, NUM_QUERIES, 2, generator=gen) * 0.3 + 0.05], -1)
    if bs > 3:
        logits[:, 3] = logits[:, 3, :1]
        boxes[:, 3] = boxes[:, 3, :1]
    gt_labels, gt_boxes = [], []
    for i, n in enumerate(num_gts):
        labels = torch.randint(0, NUM_CLASSES, (n,), generator=gen)
        xy = torch.rand(n, 2, generator=gen) * 0.6 + 0.2
        wh = torch.rand(n, 2, generator=gen) * 0.3 + 0.05
        gt = torch.cat([xy, wh], 1)
        if i == 2 and n >= 2:
            gt[1], labels[1] = gt[0], labels[0]
        gt_labels.append(labels)
        gt_boxes.append(gt)
    return logits, boxes, gt_labels, gt_boxes


def _mmdet_cost(costs, logits, boxes, labels, gts):
    """mmdet's weighted cost matrix of one image, from pixel xyxy boxes."""
    h, w = SHAPE
    scale = torch.tensor([w, h, w, h], dtype=torch.float32)
    pred = InstanceData(scores=logits, bboxes=bbox_cxcywh_to_xyxy(boxes) * scale)
    gt = InstanceData(labels=labels, bboxes=bbox_cxcywh_to_xyxy(gts) * scale)
    meta = dict(img_shape=SHAPE)
    return sum(cost(pred, gt, meta) for cost in costs), pred, gt, meta


@pytest.mark.parametrize('seed,num_gts', [(0, [3, 0, 4, 2]), (1, [11, 1, 2, 5]),
                                          (2, [0, 0, 0, 1]), (3, [8, 8, 3, 2])])
def test_batched_costs_and_total_cost_equal_mmdet_per_image(seed, num_gts):
    ours = TASK_UTILS.build(dict(type='RTDETRv2HungarianAssigner', match_costs=MATCH_COSTS))
    mmdet = TASK_UTILS.build(dict(type='HungarianAssigner', match_costs=MATCH_COSTS))
    logits, boxes, gt_labels, gt_boxes = _case(seed, num_gts)
    pairs = ours.match_batch(logits, boxes, gt_labels, gt_boxes)

    offsets = np.cumsum([0] + num_gts[:-1])
    stage, batch, query, gt = (t.tolist() for t in pairs[:4])
    assert pairs.counts == [sum(min(n, NUM_QUERIES) for n in num_gts)] * logits.shape[0]
    assert stage == sorted(stage)
    for s in range(logits.shape[0]):
        for i, n in enumerate(num_gts):
            mine = [(q, g - offsets[i]) for st, b, q, g in zip(stage, batch, query, gt)
                    if st == s and b == i]
            if n == 0:
                assert mine == []
                continue
            cost, pred, gt_inst, meta = _mmdet_cost(mmdet.match_costs, logits[s, i],
                                                    boxes[s, i], gt_labels[i], gt_boxes[i])
            # The batched cost is mmdet's cost (pixels vs normalised: rounding only).
            padded = ours.batched_cost(logits[s:s + 1, i:i + 1], boxes[s:s + 1, i:i + 1],
                                       gt_labels[i][None], gt_boxes[i][None])[0, 0]
            torch.testing.assert_close(padded, cost, rtol=1e-5, atol=1e-5)
            # A one-to-one matching of min(Nq, n) pairs ...
            assert len(mine) == min(n, NUM_QUERIES)
            assert len({q for q, _ in mine}) == len({g for _, g in mine}) == len(mine)
            # ... as cheap as mmdet's under mmdet's own cost matrix.
            result = mmdet.assign(pred, gt_inst, meta)
            matched = (result.gt_inds > 0).nonzero().squeeze(1)
            reference = cost[matched, result.gt_inds[matched] - 1].sum()
            total = cost[[q for q, _ in mine], [g for _, g in mine]].sum()
            assert total.item() == pytest.approx(reference.item(), rel=1e-5, abs=1e-5)


def test_pairs_index_the_concatenated_gts_and_land_on_the_device_of_the_inputs():
    ours = RTDETRv2HungarianAssigner(MATCH_COSTS)
    logits, boxes, gt_labels, gt_boxes = _case(5, [2, 3], stages=2)
    # Make each GT's best query obvious: query 2 j sits on GT j with its class.
    for i, (labels, gts) in enumerate(zip(gt_labels, gt_boxes)):
        for j in range(len(labels)):
            boxes[:, i, 2 * j] = gts[j]
            logits[:, i, 2 * j] = -8.0
            logits[:, i, 2 * j, labels[j]] = 8.0
    pairs = ours.match_batch(logits, boxes, gt_labels, gt_boxes)
    assert pairs.stage.device == logits.device and pairs.gt.dtype == torch.long
    got = sorted(zip(pairs.stage.tolist(), pairs.batch.tolist(), pairs.query.tolist(),
                     pairs.gt.tolist()))
    expected = sorted((s, i, 2 * j, [0, 2][i] + j) for s in range(2)
                      for i, n in enumerate([2, 3]) for j in range(n))
    assert got == expected


def test_nonfinite_predictions_are_matched_instead_of_failing_in_scipy():
    ours = RTDETRv2HungarianAssigner(MATCH_COSTS)
    logits, boxes, gt_labels, gt_boxes = _case(6, [3, 2], stages=1)
    logits[0, 0, 1] = float('nan')
    boxes[0, 1, 0] = float('inf')
    pairs = ours.match_batch(logits, boxes, gt_labels, gt_boxes)
    assert pairs.counts == [5]


def test_costs_without_a_batched_form_are_refused_by_name():
    with pytest.raises(ValueError, match='ClassificationCost has no batched form'):
        RTDETRv2HungarianAssigner([dict(type='ClassificationCost', weight=1.0)])
