"""Statistics of the kept boxes (:func:`compute_stats`: objects per image
and class, object sizes at the training input size) and the warnings they
give, alone and against the model's queries and denoising budget."""
from collections import Counter
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .report import MAX_EXAMPLES, DatasetStats, InputSize, ModelFacts, ValidationReport

#: Object-size thresholds (px, shorter box side at the training input size).
SIZE_THRESHOLDS = (8, 16, 32)
#: Warn when more than this share of boxes is under 8 px at the input size.
TINY_OBJECT_WARN_FRACTION = 0.25
#: Warn when more than this share of training images has no object.
EMPTY_IMAGE_WARN_FRACTION = 0.5


def compute_stats(images: Dict[Any, dict], kept: Dict[Any, List[Tuple[int, List[float]]]],
                  classes: Tuple[str, ...], cat_names: Dict[int, str],
                  input_size: Optional[InputSize], stats: DatasetStats) -> DatasetStats:
    """Fill ``stats`` from the kept boxes (see :class:`DatasetStats`);
    ``cat_names`` maps the json category ids of the classes to their names."""
    stats.num_boxes = sum(len(v) for k, v in kept.items() if k in images)
    stats.num_empty_images = sum(1 for i in images if not kept.get(i))
    stats.num_ignored_only_images = sum(1 for i in stats.ignored_image_ids
                                        if i in images and not kept.get(i))
    if images:
        stats.max_gt_image_id, boxes = max(((i, kept.get(i, [])) for i in images),
                                           key=lambda t: len(t[1]))
        stats.max_gt = len(boxes)
    per_name = Counter(cat_names[cat_id] for i in images for cat_id, _ in kept.get(i, []))
    stats.class_counts = {name: per_name[name] for name in classes}
    stats.category_ids = {name: cat_id for cat_id, name in cat_names.items()}
    stats.input_size = input_size
    sides = []
    for img_id, img in images.items():
        sy, sx = (input_size.scale_factors(img['height'], img['width'])
                  if input_size is not None else (1.0, 1.0))
        for _, (x1, y1, x2, y2) in kept.get(img_id, []):
            sides.append(min((x2 - x1) * sx, (y2 - y1) * sy))
    sides = np.asarray(sides, dtype=np.float64)
    stats.size_fractions = {t: float((sides < t).mean()) if sides.size else 0.0
                            for t in SIZE_THRESHOLDS}
    return stats


def check_model_stats(stats: DatasetStats, model: ModelFacts, source: str,
                      report: ValidationReport, test_mode: bool = False) -> None:
    """Findings of the statistics against the model: most GT in one image
    vs ``num_queries`` and the denoising budget ``num_denoising``."""
    if model.num_queries is not None and stats.max_gt > model.num_queries:
        report.add('warning', 'gt_exceeds_queries',
                   f'image id {stats.max_gt_image_id} of {source!r} has {stats.max_gt} objects, '
                   f'more than {model.num_queries_key}={model.num_queries}: at most '
                   f'{model.num_queries} can be matched and detected')
    if not test_mode and model.num_denoising and stats.max_gt:
        groups = max(model.num_denoising // stats.max_gt, 1)
        if stats.max_gt > model.num_denoising:
            report.add('warning', 'gt_exceeds_denoising',
                       f'image id {stats.max_gt_image_id} of {source!r} has {stats.max_gt} '
                       f'objects, more than {model.num_denoising_key}={model.num_denoising}: a '
                       f'batch holding it gets 1 denoising group of {2 * stats.max_gt} queries, '
                       'over the budget (more memory and attention cost)')
        else:
            report.add('info', 'denoising_groups',
                       f'{model.num_denoising_key}={model.num_denoising}: {groups} denoising '
                       f'group(s) for a batch holding the busiest image ({stats.max_gt} objects)')


def check_crowd_boxes(stats: DatasetStats, source: str, report: ValidationReport) -> None:
    """Crowd boxes of a training split: all of them ignored is an error
    (``all_boxes_ignored``: the loss would only ever see background), some
    a warning (``crowd_boxes_ignored``) with the counts.

    NOTE: an *image* whose boxes are all crowd boxes is not an error: COCO
    train2017 has such images, mmdet trains on them as background.
    """
    if not stats.num_ignored:
        return
    total = stats.num_ignored + stats.num_boxes
    if stats.num_boxes == 0:
        report.add('error', 'all_boxes_ignored',
                   f'every box in {source!r} has iscrowd=1 ({stats.num_ignored} boxes in '
                   f'{len(stats.ignored_image_ids)} images): mmdet sets ignore_flag on crowd '
                   'boxes, so none reaches the matcher or the loss and the model would learn '
                   'nothing (loss_bbox 0); set "iscrowd": 0 on the boxes that are single '
                   'objects', stats.num_ignored)
        return
    examples = [str(i) for i in stats.ignored_image_ids[:MAX_EXAMPLES]]
    report.add('warning', 'crowd_boxes_ignored',
               f'{stats.num_ignored} of {total} boxes of {source!r} have iscrowd=1 and are '
               f'ignored by training (mmdet\'s ignore_flag: they never reach the loss), in '
               f'{len(stats.ignored_image_ids)} images (ids {", ".join(examples)}'
               f'{", ..." if len(stats.ignored_image_ids) > MAX_EXAMPLES else ""}); '
               f'{stats.num_ignored_only_images} of them are left without a usable box '
               '(trained on as background)', stats.num_ignored)


def check_stats(stats: DatasetStats, classes: Tuple[str, ...], model: ModelFacts,
                source: str, report: ValidationReport, test_mode: bool = False) -> None:
    """Warnings from the statistics: GT per image vs queries and the
    denoising budget (:func:`check_model_stats`), tiny objects, images
    without objects, unused classes."""
    check_model_stats(stats, model, source, report, test_mode)
    under8 = stats.size_fractions.get(8, 0.0)
    if stats.input_size is not None and under8 > TINY_OBJECT_WARN_FRACTION:
        report.add('warning', 'tiny_objects',
                   f'{under8:.0%} of the boxes of {source!r} are under 8 px on their shorter '
                   f'side at the {stats.input_size.h}x{stats.input_size.w} input (the finest '
                   'feature map has stride 8): consider a larger input size')
    if not test_mode and stats.num_images:
        check_crowd_boxes(stats, source, report)
        if stats.num_boxes == 0:
            if not stats.num_ignored:  # else the crowd error says it
                report.add('warning', 'no_objects', f'{source!r} has no usable box at all')
        elif stats.empty_fraction > EMPTY_IMAGE_WARN_FRACTION:
            report.add('warning', 'many_empty_images',
                       f'{stats.num_empty_images} of {stats.num_images} images of {source!r} '
                       f'({stats.empty_fraction:.0%}) have no object (they are kept and '
                       'trained on as background)')
        unused = [n for n, k in stats.class_counts.items() if k == 0]
        if unused and stats.num_boxes:
            report.add('warning', 'class_without_boxes',
                       f'classes without any box in {source!r}: {unused}')
