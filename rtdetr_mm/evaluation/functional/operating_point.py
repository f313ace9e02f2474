"""Operating points of a detector: precision, recall and F1 at a score
threshold, the threshold that maximises F1, and a confusion matrix.

Input: one :class:`ImageDetections` per image, boxes xyxy in pixels of the
original image (as predictions leave the head and as mmdet's test pipeline
loads the ground truth: ``LoadAnnotations`` after ``Resize``).

Matching for precision / recall / F1 (COCO's ``COCOeval.evaluateImg`` at one
IoU threshold, every prediction kept: no ``maxDets``, no area range):

- per image and class, predictions in descending score order (stable: ties
  keep their order, as COCO's mergesort);
- each takes the not yet matched ground truth of its class with the highest
  IoU, if that IoU >= ``iou_thr``: a true positive (one GT per prediction,
  one prediction per GT, same class);
- otherwise, if it covers a crowd / ignored GT of its class (intersection
  over the prediction's area >= ``iou_thr``, COCO's crowd IoU), it is
  ignored: neither TP nor FP (COCO);
- otherwise a false positive. Every GT left unmatched is a false negative.

Greedy by score makes the matching of the predictions above any threshold
the prefix of the matching of all of them, so one matching gives the counts
at every threshold (the precision-recall and F1 curves).

NOTE: written here because neither mmdet nor pycocotools has it as a
function: mmdet's ``tpfp_default`` (``mean_ap.py``) is VOC's rule (a
prediction whose best-IoU GT is already taken is a FP even when another
free GT overlaps it enough), and pycocotools' ``evaluateImg`` is a method
of a whole ``COCOeval`` over COCO json objects. The recall here equals
COCOeval's at the same IoU for area 'all' with ``maxDets`` large (tested).

The confusion matrix follows mmdet's ``tools/analysis_tools/confusion_matrix.py``
(``analyze_per_img_dets``), at ``score_thr`` and ``iou_thr``: rows are the
GT classes plus background (last), columns the predicted classes plus
background (last). A prediction adds 1 to ``[gt class, predicted class]``
for EVERY GT it overlaps with IoU >= ``iou_thr`` (not one-to-one:
duplicates count on the diagonal), or 1 to ``[background, predicted class]``
when it overlaps none (a false positive on background); a GT that no
prediction of its class overlaps adds 1 to ``[gt class, background]`` (a
missed object). NOTE: unlike mmdet's script, crowd / ignored GT are no
rows: they are not counted as missed, and a prediction that overlaps no GT
but covers a crowd GT of its class is not counted as background (as for
precision above, following COCO).
"""
from typing import List, NamedTuple, Sequence

import numpy as np
from mmdet.evaluation import bbox_overlaps

#: outcome of a prediction in :func:`match_image`
TP, FP, IGNORED = 1, 0, -1


class ImageDetections(NamedTuple):
    """Predictions and ground truth of one image (numpy arrays).

    Attributes:
        img_id (int): The image id (named in errors).
        pred_bboxes (np.ndarray): (N, 4) xyxy pixels.
        pred_scores (np.ndarray): (N,) scores.
        pred_labels (np.ndarray): (N,) class indices in [0, num_classes).
        gt_bboxes (np.ndarray): (M, 4) xyxy pixels, not crowd.
        gt_labels (np.ndarray): (M,) class indices.
        ignore_bboxes (np.ndarray): (K, 4) xyxy pixels, crowd / ignored GT.
        ignore_labels (np.ndarray): (K,) their class indices.
    """
    img_id: int
    pred_bboxes: np.ndarray
    pred_scores: np.ndarray
    pred_labels: np.ndarray
    gt_bboxes: np.ndarray
    gt_labels: np.ndarray
    ignore_bboxes: np.ndarray
    ignore_labels: np.ndarray

    @classmethod
    def from_arrays(cls, img_id, pred_bboxes, pred_scores, pred_labels, gt_bboxes, gt_labels,
                    ignore_bboxes=None, ignore_labels=None) -> 'ImageDetections':
        """From array-likes (numpy, CPU tensors, lists); boxes become (n, 4)
        float64 even when empty, labels int64; no crowd GT when None."""
        def boxes(value):
            return np.asarray(value if value is not None else [], np.float64).reshape(-1, 4)

        def ints(value):
            return np.asarray(value if value is not None else [], np.int64).reshape(-1)

        return cls(img_id, boxes(pred_bboxes), np.asarray(pred_scores, np.float64).reshape(-1),
                   ints(pred_labels), boxes(gt_bboxes), ints(gt_labels), boxes(ignore_bboxes),
                   ints(ignore_labels))


class Curve(NamedTuple):
    """Counts and figures at each distinct prediction score, descending.

    ``thresholds[k]``: keep the predictions with score >= it; ``tp``, ``fp``:
    (T,) counts then; ``num_gt``: GT of the class (crowd excluded);
    ``precision``, ``recall``, ``f1``: (T,) figures then.
    """
    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    num_gt: int
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray


class OperatingPoint(NamedTuple):
    """The figures of one class (or of all classes pooled) at ``score_thr``
    and at the F1-maximising threshold. 0/0 is NaN (e.g. the precision of a
    class without predictions, the recall of a class without GT)."""
    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    best_thr: float
    best_f1: float
    best_precision: float
    best_recall: float


class OperatingPoints(NamedTuple):
    """Everything :func:`evaluate_operating_points` computes.

    ``per_class[c]`` / ``overall`` (all classes pooled: micro-averaged, one
    threshold for every class); ``curves[c]`` / ``overall_curve``;
    ``confusion_matrix``: (C + 1, C + 1) int64, rows GT class, columns
    predicted class, last row / column background.
    """
    classes: tuple
    score_thr: float
    iou_thr: float
    per_class: List[OperatingPoint]
    overall: OperatingPoint
    curves: List[Curve]
    overall_curve: Curve
    confusion_matrix: np.ndarray


def match_image(image: ImageDetections, iou_thr: float) -> np.ndarray:
    """(N,) int8: :data:`TP`, :data:`FP` or :data:`IGNORED` for each
    prediction of ``image`` (see the module's matching rule)."""
    outcome = np.full(len(image.pred_scores), FP, np.int8)
    for label in np.unique(image.pred_labels):
        dets = np.flatnonzero(image.pred_labels == label)
        dets = dets[np.argsort(-image.pred_scores[dets], kind='mergesort')]
        gts = image.gt_bboxes[image.gt_labels == label]
        crowd = image.ignore_bboxes[image.ignore_labels == label]
        ious = bbox_overlaps(image.pred_bboxes[dets], gts)
        covers_crowd = (bbox_overlaps(image.pred_bboxes[dets], crowd, mode='iof')
                        >= iou_thr).any(axis=1)
        free = np.ones(len(gts), bool)
        for k, det in enumerate(dets):
            candidates = np.where(free, ious[k], -1.0)
            best = int(np.argmax(candidates)) if len(gts) else -1
            if best >= 0 and candidates[best] >= iou_thr:
                outcome[det] = TP
                free[best] = False
            elif covers_crowd[k]:
                outcome[det] = IGNORED
    return outcome


def confusion_matrix_image(image: ImageDetections, num_classes: int, score_thr: float,
                           iou_thr: float) -> np.ndarray:
    """(C + 1, C + 1) int64 confusion counts of one image (the module's rule)."""
    matrix = np.zeros((num_classes + 1, num_classes + 1), np.int64)
    keep = image.pred_scores >= score_thr
    boxes, labels = image.pred_bboxes[keep], image.pred_labels[keep].astype(np.int64)
    gt_labels = image.gt_labels.astype(np.int64)
    hits = bbox_overlaps(boxes, image.gt_bboxes) >= iou_thr  # (D, G)
    det_idx, gt_idx = np.nonzero(hits)
    np.add.at(matrix, (gt_labels[gt_idx], labels[det_idx]), 1)
    same_class_crowd = (bbox_overlaps(boxes, image.ignore_bboxes, mode='iof') >= iou_thr) & (
        labels[:, None] == image.ignore_labels[None, :])
    background = ~hits.any(axis=1) & ~same_class_crowd.any(axis=1)
    np.add.at(matrix, (num_classes, labels[background]), 1)
    found = (hits & (labels[:, None] == gt_labels[None, :])).any(axis=0)
    np.add.at(matrix, (gt_labels[~found], num_classes), 1)
    return matrix


def _ratio(num: float, den: float) -> float:
    return float(num) / den if den else float('nan')


def pr_curve(scores: np.ndarray, outcome: np.ndarray, num_gt: int) -> Curve:
    """The :class:`Curve` of predictions with these ``scores`` and
    ``outcome`` (ignored ones dropped) against ``num_gt`` GT."""
    kept = outcome != IGNORED
    order = np.argsort(-scores[kept], kind='mergesort')
    scores, is_tp = scores[kept][order], outcome[kept][order] == TP
    last_of_tie = np.r_[scores[1:] != scores[:-1], True] if len(scores) else np.zeros(0, bool)
    tp = np.cumsum(is_tp)[last_of_tie]
    fp = np.cumsum(~is_tp)[last_of_tie]
    with np.errstate(invalid='ignore', divide='ignore'):
        precision = tp / (tp + fp)
        recall = tp / num_gt if num_gt else np.full(len(tp), np.nan)
        f1 = 2 * tp / (tp + fp + num_gt)
    return Curve(scores[last_of_tie], tp, fp, num_gt, precision, recall, f1)


def operating_point(curve: Curve, score_thr: float) -> OperatingPoint:
    """Figures of ``curve`` at ``score_thr`` and at its best F1 (the highest
    threshold among equal F1: fewer predictions for the same F1; NaN
    threshold when there is no prediction)."""
    above = np.flatnonzero(curve.thresholds >= score_thr)
    tp = int(curve.tp[above[-1]]) if len(above) else 0
    fp = int(curve.fp[above[-1]]) if len(above) else 0
    fn = curve.num_gt - tp
    if len(curve.f1):
        best = int(np.argmax(curve.f1))
        best_thr, best_f1 = float(curve.thresholds[best]), float(curve.f1[best])
        best_p, best_r = float(curve.precision[best]), float(curve.recall[best])
    else:
        best_thr = best_p = float('nan')
        best_f1 = best_r = 0.0 if curve.num_gt else float('nan')
    return OperatingPoint(tp, fp, fn, _ratio(tp, tp + fp), _ratio(tp, curve.num_gt),
                          _ratio(2 * tp, 2 * tp + fp + fn), best_thr, best_f1, best_p, best_r)


def evaluate_operating_points(images: Sequence[ImageDetections], classes: Sequence[str],
                              score_thr: float = 0.5, iou_thr: float = 0.5) -> OperatingPoints:
    """Match every image once and compute :class:`OperatingPoints`.

    Args:
        images: One :class:`ImageDetections` per image; labels must be in
            ``[0, len(classes))`` (checked by the callers, which name the
            image).
        classes: The class names (``dataset_meta['classes']``).
        score_thr: Predictions with score >= it are kept.
        iou_thr: IoU for a match (TP, confusion cells).
    """
    num_classes = len(classes)
    scores, labels, outcomes = [], [], []
    num_gt = np.zeros(num_classes, np.int64)
    matrix = np.zeros((num_classes + 1, num_classes + 1), np.int64)
    for image in images:
        scores.append(np.asarray(image.pred_scores, np.float64))
        labels.append(np.asarray(image.pred_labels, np.int64))
        outcomes.append(match_image(image, iou_thr))
        num_gt += np.bincount(np.asarray(image.gt_labels, np.int64), minlength=num_classes)
        matrix += confusion_matrix_image(image, num_classes, score_thr, iou_thr)
    scores = np.concatenate(scores) if scores else np.zeros(0)
    labels = np.concatenate(labels) if labels else np.zeros(0, np.int64)
    outcomes = np.concatenate(outcomes) if outcomes else np.zeros(0, np.int8)
    curves = [pr_curve(scores[labels == c], outcomes[labels == c], int(num_gt[c]))
              for c in range(num_classes)]
    overall_curve = pr_curve(scores, outcomes, int(num_gt.sum()))
    return OperatingPoints(
        tuple(classes), score_thr, iou_thr, [operating_point(c, score_thr) for c in curves],
        operating_point(overall_curve, score_thr), curves, overall_curve, matrix)
