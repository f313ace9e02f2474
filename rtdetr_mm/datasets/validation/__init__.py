"""One validator for COCO detection annotations, used by
:class:`~rtdetr_mm.datasets.RTDETRv2CocoDataset` (before anything trains),
by the runner-level check and by ``tools/misc/check_dataset.py``.

Everything here is a pure function of a COCO json (or its path), the
dataset's ``metainfo.classes``, an optional image folder and optional model
facts; nothing is built or imported from mmdet's registries except in
:func:`config_dataset_facts`, which reads those facts from an mmengine
``Config``.

Findings have three levels:

* ``error``: training would crash (often deep inside the matcher or the
  loss) or silently learn the wrong thing: malformed json, unknown image or
  category ids, missing image files, image sizes that differ from the json
  (a sample by default), only crowd boxes in a training split, a val / test
  ``CocoMetric`` json without annotations or without ``area``, class names
  that differ from the json,
  ``metainfo.classes`` given as a string, a head whose ``num_classes``
  disagrees with the classes. :func:`raise_on_errors` turns them into a
  :class:`DatasetValidationError` that names the file, image id, annotation
  id or config key at fault.
* ``warning``: trains, but probably not as intended (more GT in one image
  than queries, the denoising budget exceeded, many tiny objects, many
  images without objects, label names swapped by mmdet's category order).
* ``info``: worth knowing, nothing to fix (1-based or non-contiguous
  category ids: mmdet maps categories by name).

Box convention: COCO ``bbox`` is ``[x, y, w, h]`` in pixels of the original
image; :func:`sanitize_box` returns ``[x1, y1, x2, y2]`` pixels clipped to
``[0, width] x [0, height]`` or drops the box, and is the single definition
used both for the counts in the report and by the dataset.

Modules: :mod:`.report` (findings, report, facts), :mod:`.class_checks`
(classes vs categories and the head), :mod:`.coco_checks` (json, images,
annotations, boxes), :mod:`.image_files` (files on disk and their sizes),
:mod:`.statistics` (box statistics and their warnings),
:mod:`.evaluation_checks` (the ground truth of the val / test
``CocoMetric``), :mod:`.config_sources` (the datasets, metrics and model
facts of a config) and :mod:`.validate` (the entry points).
"""
from .class_checks import check_categories, check_classes_value, check_num_classes
from .coco_checks import (REQUIRED_ANN_KEYS, REQUIRED_IMAGE_KEYS, REQUIRED_KEYS,
                          box_is_malformed, check_annotations, check_images, check_top_level,
                          load_coco_json, sanitize_box)
from .config_sources import (DatasetFacts, MetricFacts, config_coco_metrics,
                             config_dataset_facts, config_model_facts, pipelines_input_size)
from .evaluation_checks import check_evaluation_gt, check_metric_gt, gt_summary
from .image_files import (IMAGE_SIZE_SAMPLE, check_image_files, decoded_image_size,
                          header_image_size, size_sample)
from .report import (BOX_FIXES, MAX_EXAMPLES, BoxFixCounts, DatasetStats,
                     DatasetValidationError, Finding, InputSize, ModelFacts, ValidationReport,
                     raise_on_errors)
from .statistics import (EMPTY_IMAGE_WARN_FRACTION, SIZE_THRESHOLDS, TINY_OBJECT_WARN_FRACTION,
                         check_crowd_boxes, check_model_stats, check_stats, compute_stats)
from .validate import (check_config_datasets, recheck_validated, validate_coco,
                       validate_coco_dict, validate_config)

__all__ = [
    'REQUIRED_KEYS', 'REQUIRED_IMAGE_KEYS', 'REQUIRED_ANN_KEYS', 'SIZE_THRESHOLDS',
    'TINY_OBJECT_WARN_FRACTION', 'EMPTY_IMAGE_WARN_FRACTION', 'MAX_EXAMPLES', 'BOX_FIXES',
    'DatasetValidationError', 'Finding', 'InputSize', 'ModelFacts', 'BoxFixCounts',
    'DatasetStats', 'ValidationReport', 'raise_on_errors', 'load_coco_json',
    'box_is_malformed', 'sanitize_box', 'check_classes_value', 'check_categories',
    'check_num_classes', 'check_top_level', 'check_images', 'check_annotations',
    'compute_stats', 'check_model_stats', 'check_stats', 'validate_coco_dict',
    'validate_coco', 'DatasetFacts', 'pipelines_input_size', 'config_model_facts',
    'config_dataset_facts', 'recheck_validated', 'validate_config', 'check_config_datasets',
    'MetricFacts', 'config_coco_metrics', 'check_evaluation_gt', 'check_metric_gt', 'gt_summary',
    'IMAGE_SIZE_SAMPLE', 'check_image_files', 'decoded_image_size', 'header_image_size',
    'size_sample', 'check_crowd_boxes'
]
