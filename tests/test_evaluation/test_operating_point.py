"""Operating points: exact counts on a hand-made case, agreement with mmdet's
``confusion_matrix.py`` and with pycocotools' COCOeval where they overlap."""
import importlib.util
import os.path as osp

import mmdet
import numpy as np
import pytest
import torch

import rtdetr_mm  # noqa: F401 (registers OperatingPointMetric)
from rtdetr_mm.evaluation import (ImageDetections, OperatingPointError, OperatingPointMetric,
                                  evaluate_operating_points)
from rtdetr_mm.evaluation.functional import IGNORED, TP, match_image

CLASSES = ('a', 'b')


def _sample(img_id, preds, gts, crowd=()):
    """A data sample as the test loop hands it to a metric: ``preds`` rows
    (label, score, box), ``gts`` / ``crowd`` rows (label, box), xyxy pixels."""
    def instances(rows, with_scores=False):
        out = dict(bboxes=torch.tensor([r[-1] for r in rows], dtype=torch.float32).reshape(-1, 4),
                   labels=torch.tensor([r[0] for r in rows], dtype=torch.int64))
        if with_scores:
            out['scores'] = torch.tensor([r[1] for r in rows], dtype=torch.float32)
        return out
    return dict(img_id=img_id, pred_instances=instances(preds, True),
                gt_instances=instances(gts), ignored_instances=instances(crowd))


#: the hand-made case (classes a=0, b=1); what each prediction is at IoU 0.5
HAND_MADE = [
    _sample(1, preds=[
        (0, 0.9, [0, 0, 10, 10]),     # p1 a: TP on g1
        (0, 0.8, [0, 0, 10, 10]),     # p2 a: duplicate of g1 -> FP; confusion [a, a]
        (0, 0.7, [40, 0, 50, 10]),    # p3 a on the b GT g3 -> FP; confusion [b, a]
        (0, 0.6, [62, 2, 72, 12]),    # p4 a inside the crowd a region -> ignored (COCO)
        (1, 0.5625, [40, 0, 50, 10]),  # p5 b: TP on g3
        (0, 0.3, [20, 0, 30, 10]),    # p6 a: TP on g2, below score_thr 0.5
        (1, 0.3, [80, 80, 90, 90]),   # p7 b: FP, below score_thr, same score as p6
    ], gts=[(0, [0, 0, 10, 10]), (0, [20, 0, 30, 10]), (1, [40, 0, 50, 10])],
        crowd=[(0, [60, 0, 100, 40])]),
    _sample(2, preds=[
        (1, 0.625, [1, 0, 11, 10]),   # p8 b: TP on g4 (IoU 90/110)
        (0, 0.4, [50, 50, 60, 60]),   # p9 a: FP, below score_thr
    ], gts=[(1, [0, 0, 10, 10])]),
    _sample(3, preds=[(1, 0.95, [0, 0, 10, 10])], gts=[]),  # p10 b: FP on background
]


def _evaluate(samples, **kwargs):
    metric = OperatingPointMetric(**kwargs)
    metric.dataset_meta = dict(classes=CLASSES)
    metric.process({}, samples)
    return metric.evaluate(len(samples))


def test_hand_made_counts_through_the_metric():
    """At score >= 0.5, IoU 0.5: a: TP 1 (p1), FP 2 (p2, p3), p4 ignored, FN 1
    (g2); b: TP 2 (p5, p8), FP 1 (p10), FN 0; all: TP 3 FP 3 FN 1."""
    m = _evaluate(HAND_MADE, score_thr=0.5, iou_thr=0.5)
    assert m['op/precision'] == pytest.approx(3 / 6)
    assert m['op/recall'] == pytest.approx(3 / 4)
    assert m['op/F1'] == pytest.approx(6 / 10)
    assert m['op/a_F1'] == pytest.approx(2 / 5)   # 2TP / (2TP + FP + FN)
    assert m['op/b_F1'] == pytest.approx(4 / 5)
    # best per class: a at 0.9 (1 TP, 0 FP: 2/3); b at 0.5625 (2 TP, 1 FP: 4/5)
    assert (m['op/a_best_thr'], m['op/b_best_thr']) == pytest.approx((0.9, 0.5625))
    # pooled: at 0.3 p6 (TP) and p7 (FP) enter together: 4 TP, 5 FP, 0 FN -> 8/13,
    # better than 0.5625's 6/10 (counting p6 alone would give 8/12)
    assert m['op/best_thr'] == pytest.approx(0.3)
    assert m['op/best_F1'] == pytest.approx(8 / 13)
    assert len(m) == 5 + 2 * len(CLASSES)
    assert len(_evaluate(HAND_MADE, classwise=False)) == 5


def _images(samples):
    return [ImageDetections.from_arrays(
        s['img_id'], s['pred_instances']['bboxes'], s['pred_instances']['scores'],
        s['pred_instances']['labels'], s['gt_instances']['bboxes'], s['gt_instances']['labels'],
        s['ignored_instances']['bboxes'], s['ignored_instances']['labels']) for s in samples]


def test_hand_made_curves_and_confusion_matrix():
    ops = evaluate_operating_points(_images(HAND_MADE), CLASSES, score_thr=0.5, iou_thr=0.5)
    a, b = ops.per_class
    assert (a.tp, a.fp, a.fn, b.tp, b.fp, b.fn) == (1, 2, 1, 2, 1, 0)
    assert (ops.overall.tp, ops.overall.fp, ops.overall.fn) == (3, 3, 1)
    assert match_image(_images(HAND_MADE)[0], 0.5)[3] == IGNORED
    # one point per distinct score; ignored p4 is none
    np.testing.assert_allclose(ops.curves[0].thresholds, [0.9, 0.8, 0.7, 0.4, 0.3])
    np.testing.assert_array_equal(ops.curves[0].tp, [1, 1, 1, 1, 2])
    np.testing.assert_array_equal(ops.curves[0].fp, [0, 1, 2, 3, 3])
    np.testing.assert_allclose(ops.overall_curve.thresholds,
                               [0.95, 0.9, 0.8, 0.7, 0.625, 0.5625, 0.4, 0.3])
    np.testing.assert_array_equal(ops.overall_curve.tp, [0, 1, 1, 1, 2, 3, 3, 4])
    np.testing.assert_array_equal(ops.overall_curve.fp, [1, 1, 2, 3, 3, 3, 4, 5])
    np.testing.assert_allclose(ops.overall_curve.recall[-1], 1.0)
    # rows: GT a, b, background; columns: predicted a, b, background
    np.testing.assert_array_equal(ops.confusion_matrix, [
        [2, 0, 1],   # g1 found by p1 and p2 (mmdet counts both); g2 missed
        [1, 2, 0],   # p3 (a) on g3; p5 and p8 on g3, g4
        [0, 1, 0],   # p10 on background (p4 on the crowd region: not counted)
    ])
    # a score equal to the threshold is kept (mmdet's score >= score_thr): p5 at 0.5625
    at = evaluate_operating_points(_images(HAND_MADE), CLASSES, score_thr=0.5625, iou_thr=0.5)
    assert (at.per_class[1].tp, at.confusion_matrix[1, 1]) == (2, 2)


def test_out_of_range_settings_and_labels_are_named():
    with pytest.raises(OperatingPointError,
                       match=r"OperatingPointMetric': score_thr=1.5 is out of range; valid is "
                             r'a number in \[0, 1\]'):
        OperatingPointMetric(score_thr=1.5)
    with pytest.raises(OperatingPointError, match=r'iou_thr=0 .*\(0, 1\]'):
        OperatingPointMetric(iou_thr=0)
    bad = _sample(7, preds=[(2, 0.9, [0, 0, 10, 10])], gts=[(0, [0, 0, 10, 10])])
    with pytest.raises(OperatingPointError,
                       match=r'image 7: predicted label 2 is not a class index in \[0, 2\)'):
        _evaluate([bad])
    # a pipeline without LoadAnnotations: no ground truth in the data sample
    no_gt = _sample(8, preds=[(0, 0.9, [0, 0, 10, 10])], gts=[])
    del no_gt['gt_instances']
    with pytest.raises(OperatingPointError,
                       match=r"image 8: the data sample has no gt_instances.*"
                             r"dict\(type='LoadAnnotations', with_bbox=True\)"):
        _evaluate([no_gt])


# ------------------------------------------------------------ random cases
def _random_images(seed, num_images=12, num_classes=3, crowd=False):
    """GT boxes (the first one twice, slightly moved: a prediction whose
    best GT is taken can still match the other, COCO's rule, not VOC's),
    predictions near them (some of another class, some duplicated) and on
    background; continuous scores (no ties)."""
    rng = np.random.default_rng(seed)
    images = []
    for i in range(num_images):
        n = int(rng.integers(1, 7))
        xy = rng.uniform(0, 200, (n, 2))
        gt = np.hstack([xy, xy + rng.uniform(10, 60, (n, 2))])
        gt_labels = rng.integers(0, num_classes, n)
        gt, gt_labels, n = np.vstack([gt, gt[:1] + rng.normal(0, 1.5, 4)]), gt_labels[[*range(n), 0]], n + 1
        near = gt[rng.integers(0, n, 2 * n)] + rng.normal(0, 4, (2 * n, 4))
        xy = rng.uniform(0, 200, (3, 2))
        far = np.hstack([xy, xy + rng.uniform(10, 60, (3, 2))])
        boxes = np.vstack([near, far])
        # valid boxes (x1 <= x2): COCO ignores a box of negative area (area range)
        boxes = np.hstack([np.minimum(boxes[:, :2], boxes[:, 2:]),
                           np.maximum(boxes[:, :2], boxes[:, 2:])])
        labels = rng.integers(0, num_classes, len(boxes))
        k = int(crowd and rng.random() < 0.6)
        crowd_xy = rng.uniform(0, 150, (k, 2))
        crowd_boxes = np.hstack([crowd_xy, crowd_xy + rng.uniform(40, 100, (k, 2))])
        if k:  # predictions inside the crowd region
            inner = crowd_boxes[0, :2] + rng.uniform(0, 20, (3, 2))
            boxes = np.vstack([boxes, np.hstack([inner, inner + 15])])
            labels = np.r_[labels, rng.integers(0, num_classes, 3)]
        images.append(ImageDetections.from_arrays(
            i + 1, boxes, rng.random(len(boxes)), labels, gt, gt_labels, crowd_boxes,
            rng.integers(0, num_classes, k)))
    return images


def _mmdet_confusion_matrix_module():
    """mmdet's tools/analysis_tools/confusion_matrix.py as installed."""
    path = osp.join(osp.dirname(mmdet.__file__), '.mim', 'tools', 'analysis_tools',
                    'confusion_matrix.py')
    spec = importlib.util.spec_from_file_location('mmdet_confusion_matrix', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Dataset:
    """What mmdet's calculate_confusion_matrix reads of a dataset."""

    def __init__(self, images, classes):
        self.metainfo = dict(classes=classes)
        self.images = images

    def __len__(self):
        return len(self.images)

    def get_data_info(self, idx):
        im = self.images[idx]
        return dict(instances=[dict(bbox=list(b), bbox_label=int(c), ignore_flag=0)
                               for b, c in zip(im.gt_bboxes, im.gt_labels)])


@pytest.mark.parametrize('score_thr,iou_thr', [(0.3, 0.5), (0.0, 0.3)])
def test_confusion_matrix_matches_mmdet(score_thr, iou_thr):
    """Without crowd regions the matrix is mmdet's calculate_confusion_matrix."""
    classes = ('x', 'y', 'z')
    images = _random_images(0, num_classes=len(classes))
    results = [dict(pred_instances=dict(bboxes=torch.from_numpy(im.pred_bboxes),
                                        scores=torch.from_numpy(im.pred_scores),
                                        labels=torch.from_numpy(im.pred_labels)))
               for im in images]
    expected = _mmdet_confusion_matrix_module().calculate_confusion_matrix(
        _Dataset(images, classes), results, score_thr=score_thr, tp_iou_thr=iou_thr)
    ops = evaluate_operating_points(images, classes, score_thr, iou_thr)
    assert expected[:, -1].sum() > 0 and expected[-1].sum() > 0  # misses and background FP
    assert (expected - np.diag(np.diag(expected)))[:-1, :-1].sum() > 0  # confusions
    np.testing.assert_array_equal(ops.confusion_matrix, expected)


def test_counts_match_pycocotools():
    """What COCOeval computes at one IoU, area 'all', maxDets large, with
    crowd regions: per class the TP / FP / ignored outcome of every
    prediction (evalImgs' dtMatches / dtIgnore) and the recall
    (eval['recall']) equal ours with every prediction kept (score_thr 0)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    classes = ('x', 'y', 'z')
    images = _random_images(1, num_classes=len(classes), crowd=True)
    assert sum(len(im.ignore_bboxes) for im in images) >= 3

    def xywh(b):
        return [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]
    anns, dets = [], []
    for im in images:
        for boxes, labels, crowd in ((im.gt_bboxes, im.gt_labels, 0),
                                     (im.ignore_bboxes, im.ignore_labels, 1)):
            for b, c in zip(boxes, labels):
                anns.append(dict(id=len(anns) + 1, image_id=im.img_id, category_id=int(c) + 1,
                                 bbox=xywh(b), area=xywh(b)[2] * xywh(b)[3], iscrowd=crowd))
        dets += [dict(image_id=im.img_id, category_id=int(c) + 1, bbox=xywh(b), score=float(s))
                 for b, c, s in zip(im.pred_bboxes, im.pred_labels, im.pred_scores)]
    gt = COCO()
    gt.dataset = dict(images=[dict(id=im.img_id, width=300, height=300) for im in images],
                      annotations=anns,
                      categories=[dict(id=k + 1, name=c) for k, c in enumerate(classes)])
    gt.createIndex()
    coco_eval = COCOeval(gt, gt.loadRes(dets), 'bbox')
    coco_eval.params.iouThrs = np.array([0.5])
    coco_eval.params.maxDets = [1000]
    coco_eval.params.areaRng, coco_eval.params.areaRngLbl = [[0, 1e10]], ['all']
    coco_eval.evaluate()
    coco_eval.accumulate()

    ops = evaluate_operating_points(images, classes, score_thr=0.0, iou_thr=0.5)
    outcome = np.concatenate([match_image(im, 0.5) for im in images])
    labels = np.concatenate([im.pred_labels for im in images])
    for k in range(len(classes)):
        evals = [e for e in coco_eval.evalImgs if e is not None and e['category_id'] == k + 1]
        matched = np.concatenate([e['dtMatches'][0] > 0 for e in evals])
        ignored = np.concatenate([e['dtIgnore'][0] for e in evals]).astype(bool)
        op = ops.per_class[k]
        assert (op.tp, op.fp) == (int((matched & ~ignored).sum()), int((~matched & ~ignored).sum()))
        assert int((outcome[labels == k] == IGNORED).sum()) == int(ignored.sum())
        assert op.recall == pytest.approx(coco_eval.eval['recall'][0, k, 0, 0])
    assert (outcome == IGNORED).sum() > 0 and (outcome == TP).sum() > 0
