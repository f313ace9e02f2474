"""Stop a run on bad annotations before its first iteration."""
import logging
from typing import Dict, Optional, Sequence

from mmdet.registry import HOOKS
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.runner import BaseLoop

from rtdetr_mm.datasets.validation import ValidationReport, check_config_datasets
from rtdetr_mm.datasets.walk import leaf_datasets

SPLITS = ('train', 'val', 'test')


@HOOKS.register_module()
class RTDETRv2DatasetCheckHook(Hook):
    """Validate the config's COCO datasets in ``before_run``.

    ``before_run`` runs after the runner has built the loops of this run
    (and so their datasets) and before weights are initialised or loaded and
    before any iteration. For each COCO dataset of the dataloaders whose
    loop was built (train and val in ``runner.train()``, test in
    ``runner.test()``; restricted to ``splits``), it runs
    :func:`~rtdetr_mm.datasets.validation.check_config_datasets`:
    ``metainfo.classes`` is a tuple of names that matches
    ``model.bbox_head.num_classes`` (which the dataset alone cannot know),
    the categories, ids, image files and boxes are sound, and the most GT in
    one image is compared with ``num_queries`` and the denoising budget.
    Errors raise :class:`~rtdetr_mm.datasets.DatasetValidationError` naming
    the file, image id, annotation id or config key; warnings are logged.

    A dataset that validated itself when it was built
    (``RTDETRv2CocoDataset``, which already stops on the annotation errors)
    is not read again: only the config-level checks run on its report. Other
    COCO datasets (mmdet's ``CocoDataset``) get the full validation here.
    Every rank runs the check (on the same files, so all stop together).

    The ground truth of the val / test ``CocoMetric`` is checked too (its
    annotations exist; ``area`` is present where pycocotools reads the file),
    so a run does not fail or save a "best" checkpoint at mAP -1 after an
    epoch.

    Args:
        splits (Sequence[str]): Splits that may be checked.
            Defaults to ``('train', 'val', 'test')``.
        verify_images (bool): Decode every image file of every checked
            dataset (also of those that validated themselves, which are then
            read again): corrupt files and every size that differs from the
            json. By default the datasets check the header sizes of a
            sample. Defaults to False.
    """
    # before every other hook's before_run (EMA copies, checkpoint loading)
    priority = 'VERY_HIGH'

    def __init__(self, splits: Sequence[str] = SPLITS, verify_images: bool = False) -> None:
        bad = [s for s in splits if s not in SPLITS]
        if bad:
            raise ValueError(f'splits must be among {SPLITS}, got {bad}')
        self.splits = tuple(splits)
        self.verify_images = verify_images

    def before_run(self, runner) -> None:
        splits, validated = [], {}
        for split in self.splits:
            # NOTE: the private attributes: the public ``runner.train_loop``
            # property would build a loop this run does not use.
            loop = getattr(runner, f'_{split}_loop', None)
            if not isinstance(loop, BaseLoop):
                continue
            splits.append(split)
            validated.update(self._validated_reports(getattr(loop, 'dataloader', None)))
        if not splits:
            return
        if self.verify_images:
            validated = {}  # every dataset read again, every image decoded
        results = check_config_datasets(runner.cfg, splits, validated,
                                        verify_images=self.verify_images)
        for facts, report in results:
            self._log(facts, report, reused=facts.ann_file in validated)

    @staticmethod
    def _validated_reports(dataloader) -> Dict[str, ValidationReport]:
        out = {}
        dataset = getattr(dataloader, 'dataset', None)
        if dataset is None:
            return out
        for node in leaf_datasets(dataset):
            leaf = node.dataset
            report: Optional[ValidationReport] = getattr(leaf, 'validation_report', None)
            if report is not None and getattr(leaf, 'ann_file', None):
                out[leaf.ann_file] = report
        return out

    @staticmethod
    def _log(facts, report: ValidationReport, reused: bool) -> None:
        what = 'config checks' if reused else 'annotations checked'
        print_log(f'dataset check ({what}): {facts.key} {facts.ann_file!r}: '
                  f'{report.stats.num_images} images, {report.stats.num_boxes} boxes, '
                  f'{len(report.warnings)} warning(s)', logger='current', level=logging.INFO)
        for finding in report.warnings:
            print_log(f'dataset check: {finding.message}', logger='current',
                      level=logging.WARNING)
