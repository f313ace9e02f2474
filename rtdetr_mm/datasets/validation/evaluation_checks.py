"""Checks of the ground truth a split's ``CocoMetric`` evaluates against,
run before training so that they do not fail or mislead after an epoch.

``CocoMetric`` with an ``ann_file`` reads that json itself with pycocotools
(not the dataset object): ``COCOeval`` needs ``area`` on every annotation
(``KeyError: 'area'`` at the first evaluation otherwise), and a json without
annotations gives every mAP as -1, from which a "best" checkpoint would be
chosen. Without ``ann_file`` the metric builds its ground truth from the
dataset's instances (areas from the boxes), so only the annotations must
exist. ``format_only=True`` (test-dev style) needs no ground truth.
"""
import os.path as osp
from typing import List, Optional, Tuple

from .coco_checks import load_coco_json
from .config_sources import DatasetFacts, MetricFacts, config_coco_metrics
from .report import DatasetStats, ValidationReport, _Examples


def gt_summary(coco: dict) -> DatasetStats:
    """``has_annotations_key``, ``num_annotations``, ``num_without_area``
    and ``without_area_examples`` of a parsed COCO json (the rest zero)."""
    stats = DatasetStats()
    anns = coco.get('annotations')
    stats.has_annotations_key = anns is not None
    anns = anns if isinstance(anns, list) else []
    stats.num_annotations = len(anns)
    ex = _Examples()
    for ann in anns:
        if isinstance(ann, dict) and 'area' not in ann:
            ex.add('missing_area', f'annotation id {ann.get("id")}')
    stats.num_without_area = ex.count['missing_area']
    stats.without_area_examples = ex.text('missing_area')
    return stats


def check_metric_gt(metric: MetricFacts, gt_file: str, stats: DatasetStats,
                    report: ValidationReport) -> None:
    """Errors for the ground truth ``gt_file`` (``stats`` of it) of
    ``metric``: no annotations (``no_evaluation_gt``), annotations without
    ``area`` when the metric reads the file itself (``missing_area``)."""
    if metric.format_only:
        return
    what = ('reads' if metric.ann_file is not None
            else 'builds its ground truth from the dataset of')
    if not stats.has_annotations_key or stats.num_annotations == 0:
        has = 'no "annotations" key' if not stats.has_annotations_key else '"annotations": []'
        report.add('error', 'no_evaluation_gt',
                   f'{metric.key} (CocoMetric) {what} {gt_file!r}, which has {has}: every mAP '
                   'would be -1 (no ground truth) and no best checkpoint could be chosen; give '
                   f'the annotated {metric.split} json, or set {metric.key}.format_only=True '
                   'to only write the predictions (test-dev style)')
    elif metric.ann_file is not None and stats.num_without_area:
        report.add('error', 'missing_area',
                   f'{stats.num_without_area} of {stats.num_annotations} annotations of '
                   f'{gt_file!r} have no "area" ({stats.without_area_examples}): '
                   f'{metric.key} (CocoMetric) reads this file with pycocotools, whose COCOeval '
                   "raises KeyError: 'area' at the first evaluation, after an epoch of "
                   'training. Add "area" to every annotation (the mask area; the box w*h for '
                   f'box-only data), or set {metric.key}.ann_file=None: CocoMetric then builds '
                   'its ground truth from the dataset, areas from the boxes',
                   stats.num_without_area)


def _same_file(a: Optional[str], b: Optional[str]) -> bool:
    return bool(a and b) and osp.abspath(a) == osp.abspath(b)


def check_evaluation_gt(cfg, results: List[Tuple[DatasetFacts, ValidationReport]]) -> None:
    """For each ``CocoMetric`` of the val / test evaluators of ``cfg``
    whose split is in ``results``, add :func:`check_metric_gt` findings to
    the report of the split's dataset that holds the metric's ground truth
    (the first of the split when the metric reads another file, which is
    then read here)."""
    for split in ('val', 'test'):
        of_split = [(f, r) for f, r in results if f.split == split]
        if not of_split:
            continue
        for metric in config_coco_metrics(cfg, split):
            if metric.ann_file is None:
                for facts, report in of_split:
                    check_metric_gt(metric, facts.ann_file, report.stats, report)
                continue
            same = [r for f, r in of_split if _same_file(f.ann_file, metric.ann_file)]
            if same:
                check_metric_gt(metric, metric.ann_file, same[0].stats, same[0])
                continue
            report = of_split[0][1]
            read = ValidationReport(metric.ann_file)
            coco = load_coco_json(metric.ann_file, read)
            if coco is None:
                for f in read.errors:
                    report.add('error', f.code, f'{metric.key}: {f.message}')
                continue
            check_metric_gt(metric, metric.ann_file, gt_summary(coco), report)


__all__ = ['check_evaluation_gt', 'check_metric_gt', 'gt_summary']
