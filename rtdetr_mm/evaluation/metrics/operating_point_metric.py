"""OperatingPointMetric: precision, recall and F1 at a score threshold, the
F1-maximising threshold and a confusion matrix, next to ``CocoMetric``::

    val_evaluator = [
        dict(type='CocoMetric', ann_file=..., metric='bbox'),
        dict(type='OperatingPointMetric', score_thr=0.5, iou_thr=0.5),
    ]

The matching rules are those of
:mod:`rtdetr_mm.evaluation.functional.operating_point`.
"""
import math
from typing import Optional, Sequence, Tuple

from mmdet.registry import METRICS
from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger

from ..functional.operating_point import ImageDetections, evaluate_operating_points
from ..operating_point_report import format_table, write_report


class OperatingPointError(ValueError):
    """A setting of the metric or an input it cannot use; the message names
    the key or image and what to do."""


def check_thresholds(score_thr, iou_thr, where: str,
                     names: Tuple[str, str] = ('score_thr', 'iou_thr')) -> None:
    """Raise :class:`OperatingPointError` unless ``score_thr`` is a number in
    [0, 1] and ``iou_thr`` in (0, 1]; ``where`` and ``names`` say where the
    user set them (a config entry, command-line options)."""
    for name, value, valid, low_open in ((names[0], score_thr, '[0, 1]', False),
                                         (names[1], iou_thr, '(0, 1]', True)):
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
              and math.isfinite(value) and (0 < value if low_open else 0 <= value) and value <= 1)
        if not ok:
            raise OperatingPointError(
                f'{where}: {name}={value!r} is out of range; valid is a number in {valid}')


def check_labels(labels, num_classes: int, what: str, img_id) -> None:
    """Raise :class:`OperatingPointError` if a label is outside [0, num_classes)."""
    bad = [int(v) for v in labels if not 0 <= int(v) < num_classes]
    if bad:
        raise OperatingPointError(
            f'image {img_id}: {what} label {bad[0]} is not a class index in [0, {num_classes}) '
            f'(the dataset has {num_classes} classes): the predictions come from a model of '
            'another class count, or the ground truth from another dataset')


@METRICS.register_module()
class OperatingPointMetric(BaseMetric):
    """Operating points of a detector, logged as ``op/...``.

    Logged (``default_prefix='op'``): ``op/precision``, ``op/recall``,
    ``op/F1`` at ``score_thr`` over all classes pooled (micro-averaged: one
    threshold for every class), ``op/best_thr`` and ``op/best_F1`` (the
    threshold that maximises the pooled F1), and with ``classwise``
    ``op/<class>_F1`` and ``op/<class>_best_thr`` (two scalars per class).
    The whole per-class table is logged as text; with ``out_dir`` the report
    files (CSV, PR and F1 curves, confusion matrix PNG and CSV,
    :data:`rtdetr_mm.evaluation.operating_point_report.FILES`) are written there.

    Ground truth comes from the data samples (``gt_instances``; crowd /
    ignored boxes from ``ignored_instances``) as mmdet's ``VOCMetric``
    reads it: the test pipeline must load annotations AFTER ``Resize``
    (mmdet's convention), so that they are in original-image pixels like the
    predictions.

    Args:
        score_thr (float): Predictions with score >= it count, in [0, 1].
        iou_thr (float): IoU for a match, in (0, 1].
        classwise (bool): Log the per-class scalars.
        out_dir (str, optional): Write the report files here.
        collect_device (str): As mmengine's ``BaseMetric``.
        prefix (str, optional): Replaces ``'op'``.
    """
    default_prefix: Optional[str] = 'op'

    def __init__(self, score_thr: float = 0.5, iou_thr: float = 0.5, classwise: bool = True,
                 out_dir: Optional[str] = None, collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        check_thresholds(score_thr, iou_thr, "evaluator type='OperatingPointMetric'")
        self.score_thr = float(score_thr)
        self.iou_thr = float(iou_thr)
        self.classwise = classwise
        self.out_dir = out_dir

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        """Keep each image's predictions and ground truth as numpy arrays
        (the fields of :class:`ImageDetections`)."""
        num_classes = len(self.dataset_meta['classes'])
        for sample in data_samples:
            img_id = sample.get('img_id', sample.get('img_path'))
            if 'gt_instances' not in sample:
                raise OperatingPointError(
                    f'image {img_id}: the data sample has no gt_instances, which '
                    "OperatingPointMetric needs: add dict(type='LoadAnnotations', with_bbox=True) "
                    'to the pipeline of the val / test dataloader (after Resize)')
            pred, gt = sample['pred_instances'], sample['gt_instances']
            ignored = sample.get('ignored_instances', {})
            image = ImageDetections.from_arrays(
                img_id, pred['bboxes'].cpu(), pred['scores'].cpu(), pred['labels'].cpu(),
                gt['bboxes'].cpu(), gt['labels'].cpu(),
                ignored['bboxes'].cpu() if 'bboxes' in ignored else None,
                ignored['labels'].cpu() if 'labels' in ignored else None)
            check_labels(image.pred_labels, num_classes, 'predicted', img_id)
            check_labels(image.gt_labels, num_classes, 'ground-truth', img_id)
            # NOTE: a dict, not the NamedTuple: mmengine's BaseMetric.evaluate
            # turns every tuple of self.results into a plain tuple (_to_cpu)
            self.results.append(image._asdict())

    def compute_metrics(self, results: list) -> dict:
        """The logged scalars (see the class); logs the table, writes the
        report files when ``out_dir`` is set."""
        classes = self.dataset_meta['classes']
        ops = evaluate_operating_points([ImageDetections(**r) for r in results], classes,
                                        self.score_thr, self.iou_thr)
        logger = MMLogger.get_current_instance()
        logger.info('\n' + format_table(ops))
        if self.out_dir:
            paths = write_report(ops, self.out_dir)
            logger.info(f'operating-point report written to {self.out_dir}: '
                        + ', '.join(sorted(paths.values())))
        overall = ops.overall
        metrics = dict(precision=overall.precision, recall=overall.recall, F1=overall.f1,
                       best_thr=overall.best_thr, best_F1=overall.best_f1)
        if self.classwise:
            for name, op in zip(classes, ops.per_class):
                metrics[f'{name}_F1'] = op.f1
                metrics[f'{name}_best_thr'] = op.best_thr
        return metrics
