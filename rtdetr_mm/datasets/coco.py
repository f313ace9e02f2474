"""mmdet's ``CocoDataset`` that validates its annotations before training.

:class:`RTDETRv2CocoDataset` runs :func:`~rtdetr_mm.datasets.validation.validate_coco`
on its own annotation file and image folder when it loads them, so that
wrong category names, unknown ids, missing images or a ``metainfo.classes``
string stop the run at dataset construction (before the first iteration)
with a :class:`DatasetValidationError` naming the file, image id, annotation
id or key, instead of a stack trace from inside the matcher or the loss.
Boxes are clipped to their image or dropped by the validator's
:func:`~rtdetr_mm.datasets.validation.sanitize_box`, and the counts are
logged.
"""
import copy
import logging
from typing import List, Union

from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS
from mmengine.fileio import get_local_path
from mmengine.logging import print_log

from .transforms import ImageLoadError, unreadable_image_error
from .validation import (DatasetValidationError, ValidationReport, raise_on_errors,
                         sanitize_box, validate_coco)


class DatasetPipelineError(RuntimeError):
    """A transform failed on one image; the message names the image file,
    its id and the annotation file (the original error is chained)."""


@DATASETS.register_module()
class RTDETRv2CocoDataset(CocoDataset):
    """COCO detection dataset with annotation validation.

    Differences from mmdet's ``CocoDataset`` (all other arguments are the
    same):

    * the annotation json is validated when loaded (once: the parsed json is
      reused for the COCO index); errors raise
      :class:`DatasetValidationError`, warnings and box fixes are logged;
    * boxes partly outside the image are clipped to it, and boxes with zero
      or negative size, outside the image or under 1 px after clipping are
      dropped (mmdet keeps the unclipped box, and silently drops boxes whose
      ``area`` field is <= 0: here ``area`` is not used for training);
    * an exception in the pipeline is re-raised as
      :class:`DatasetPipelineError` naming the image file and id, and, when
      the file itself is missing, empty or does not decode, why (caused by
      an ``ImageLoadError``, whichever loader the pipeline uses).

    Images without objects stay in the dataset unless
    ``filter_cfg=dict(filter_empty_gt=True)`` asks otherwise.

    Args:
        allow_extra_categories (bool): Train on the subset of json
            categories named in ``metainfo.classes``: annotations of other
            categories are dropped with a warning. By default such
            annotations are an error (most often ``classes`` was forgotten).
        check_image_files (bool): Check that every image file exists and
            that the size of a sample of them (header read, see
            :func:`~rtdetr_mm.datasets.validation.size_sample`) is the
            json's width / height (local files only; skipped when
            ``backend_args`` selects another backend). Defaults to True.
        verify_images (bool): Decode every image file instead: finds
            corrupt files and every size that differs from the json
            (slow on large datasets). Defaults to False.
    """

    def __init__(self, *args, allow_extra_categories: bool = False,
                 check_image_files: bool = True, verify_images: bool = False,
                 **kwargs) -> None:
        self.allow_extra_categories = allow_extra_categories
        self.check_image_files = check_image_files
        self.verify_images = verify_images
        self.validation_report: ValidationReport = None
        super().__init__(*args, **kwargs)

    def load_data_list(self) -> List[dict]:
        """Validate the annotation file, then parse it as mmdet does.

        Raises:
            DatasetValidationError: The annotations would break training.
        """
        img_dir = self.data_prefix.get('img') if self.check_image_files else None
        if self.backend_args is not None:
            img_dir = None
        with get_local_path(self.ann_file, backend_args=self.backend_args) as local_path:
            report, coco_dict = validate_coco(
                local_path, self._metainfo.get('classes'), img_dir=img_dir,
                test_mode=self.test_mode, allow_extra_categories=self.allow_extra_categories,
                verify_images=self.verify_images)
        report.source = self.ann_file
        self.validation_report = report
        raise_on_errors(report, type(self).__name__)
        self._log_report(report)

        self.coco = self.COCOAPI()
        self.coco.dataset = coco_dict
        self.coco.createIndex()
        self.coco.img_ann_map = self.coco.imgToAnns
        self.coco.cat_img_map = self.coco.catToImgs
        # mmdet's mapping: label i = i-th json category whose name is in
        # classes (CocoMetric builds the same one)
        self.cat_ids = self.coco.get_cat_ids(cat_names=self.metainfo['classes'])
        self.cat2label = {cat_id: i for i, cat_id in enumerate(self.cat_ids)}
        self.cat_img_map = copy.deepcopy(self.coco.cat_img_map)

        data_list = []
        for img_id in self.coco.get_img_ids():
            raw_img_info = dict(self.coco.load_imgs([img_id])[0], img_id=img_id)
            raw_ann_info = self.coco.load_anns(self.coco.get_ann_ids(img_ids=[img_id]))
            data_list.append(self.parse_data_info(
                dict(raw_img_info=raw_img_info, raw_ann_info=raw_ann_info)))
        del self.coco
        return data_list

    def parse_data_info(self, raw_data_info: dict) -> Union[dict, List[dict]]:
        """mmdet's parsing with the validator's box rules.

        Returns:
            dict: ``img_path``, ``img_id``, ``height``, ``width``, ... and
            ``instances``: each with ``bbox`` ``[x1, y1, x2, y2]`` pixels
            inside the image, ``bbox_label`` and ``ignore_flag`` (iscrowd).
        """
        img_info = raw_data_info['raw_img_info']
        data_info = super().parse_data_info(dict(raw_img_info=img_info, raw_ann_info=[]))
        instances = []
        for ann in raw_data_info['raw_ann_info']:
            if ann.get('ignore', False) or ann['category_id'] not in self.cat2label:
                continue
            bbox, _ = sanitize_box(ann['bbox'], img_info['width'], img_info['height'])
            if bbox is None:
                continue
            instance = dict(bbox=bbox, bbox_label=self.cat2label[ann['category_id']],
                            ignore_flag=1 if ann.get('iscrowd', False) else 0)
            if ann.get('segmentation', None):
                instance['mask'] = ann['segmentation']
            instances.append(instance)
        data_info['instances'] = instances
        return data_info

    def prepare_data(self, idx: int):
        """The pipeline's output for sample ``idx``; a failing transform is
        re-raised as :class:`DatasetPipelineError` naming the image."""
        try:
            return super().prepare_data(idx)
        except DatasetPipelineError:
            raise
        except Exception as e:  # noqa: BLE001 - re-raised with the image named
            info = self.get_data_info(idx)
            cause = e
            if not isinstance(e, ImageLoadError):
                # mmcv's LoadImageFromFile (our configs') does not say why
                # the file cannot be read: the same message as
                # RTDETRv2LoadImageFromFile's when the file is at fault
                load_error = unreadable_image_error(info.get('img_path'), info.get('img_id'))
                if load_error is not None:
                    load_error.__cause__ = e
                    cause = load_error
            raise DatasetPipelineError(
                f'pipeline failed on image {info.get("img_path")!r} (image id '
                f'{info.get("img_id")}) of {self.ann_file!r}: {type(cause).__name__}: '
                f'{cause}') from cause

    def _log_report(self, report: ValidationReport) -> None:
        name = f'{type(self).__name__} {self.ann_file!r}'
        stats = report.stats
        print_log(f'{name}: {stats.num_images} images ({stats.num_empty_images} without '
                  f'objects, kept), {stats.num_boxes} boxes, {stats.num_ignored} ignored '
                  f'(iscrowd=1); {report.fixes.summary()}',
                  logger='current', level=logging.INFO)
        for finding in report.warnings:
            print_log(f'{type(self).__name__}: {finding.message}', logger='current',
                      level=logging.WARNING)
        for finding in report.infos:
            print_log(f'{type(self).__name__}: {finding.message}', logger='current',
                      level=logging.INFO)


__all__ = ['DatasetPipelineError', 'DatasetValidationError', 'RTDETRv2CocoDataset']
