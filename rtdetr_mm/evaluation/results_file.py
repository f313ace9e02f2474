"""Predictions of ``tools/test.py --out results.pkl`` (mmdet's
``DumpDetResults``) joined with the ground truth of a dataset, by image id.

NOTE: the file is unpickled as mmdet's ``confusion_matrix.py`` does
(``mmengine.fileio.load``), without the ``weights_only`` allow-list that
checkpoints get: mmengine dumps tensors with plain pickle, whose tensor
rebuild (``torch.storage._load_from_bytes``) unpickles unrestricted anyway.
Read only results files you wrote.
"""
import os.path as osp
from typing import List

from mmengine.fileio import load

from .functional.operating_point import ImageDetections
from .metrics.operating_point_metric import OperatingPointError, check_labels


def _load(path: str) -> list:
    """The list of per-image dicts in ``path`` (each with ``img_id`` and
    ``pred_instances``), or :class:`OperatingPointError` saying what is wrong."""
    if not osp.isfile(path):
        raise OperatingPointError(f'{path}: no such results file; write one with '
                                  'tools/test.py CONFIG CHECKPOINT --out results.pkl')
    try:
        results = load(path)
    except Exception as err:  # noqa: BLE001 (any unpickling failure: the file is not ours)
        raise OperatingPointError(f'{path}: cannot be read as a pickle ({type(err).__name__}: '
                                  f'{err}); write it with tools/test.py --out results.pkl')
    valid = isinstance(results, list) and all(
        isinstance(r, dict) and 'img_id' in r and 'pred_instances' in r
        and {'bboxes', 'scores', 'labels'} <= set(r['pred_instances']) for r in results)
    if not valid:
        raise OperatingPointError(
            f'{path}: not the predictions of tools/test.py --out (a list of dicts with img_id and '
            'pred_instances bboxes / scores / labels)')
    return results


def read_results(path: str, dataset, config: str) -> List[ImageDetections]:
    """One :class:`ImageDetections` per image of ``dataset`` (in its order).

    The ground truth is ``dataset.get_data_info(i)['instances']`` (xyxy
    pixels of the original image; ``ignore_flag`` = crowd), as mmdet's
    ``confusion_matrix.py`` reads it; ``config`` names the dataset's config
    in errors. Every image of the dataset must have predictions in the file
    and every prediction an image of the dataset.
    """
    results = _load(path)
    by_id = {}
    for r in results:
        if r['img_id'] in by_id:
            raise OperatingPointError(f'{path}: image id {r["img_id"]} appears twice')
        by_id[r['img_id']] = r
    num_classes = len(dataset.metainfo['classes'])
    images, seen = [], set()
    for idx in range(len(dataset)):
        info = dataset.get_data_info(idx)
        img_id = info['img_id']
        if img_id not in by_id:
            raise OperatingPointError(
                f'{path} has no predictions for image id {img_id} ({info.get("img_path")}) of '
                f'the test dataset of {config} ({len(results)} images in the file, '
                f'{len(dataset)} in the dataset): evaluate with the config the file was '
                'written with, or rerun tools/test.py --out')
        seen.add(img_id)
        pred = by_id[img_id]['pred_instances']
        gts = [g for g in info['instances'] if not g.get('ignore_flag', 0)]
        crowd = [g for g in info['instances'] if g.get('ignore_flag', 0)]
        image = ImageDetections.from_arrays(
            img_id, pred['bboxes'], pred['scores'], pred['labels'],
            [g['bbox'] for g in gts], [g['bbox_label'] for g in gts],
            [g['bbox'] for g in crowd], [g['bbox_label'] for g in crowd])
        check_labels(image.pred_labels, num_classes, f'{path}: predicted', img_id)
        check_labels(image.gt_labels, num_classes, f'{config}: ground-truth', img_id)
        images.append(image)
    extra = sorted(set(by_id) - seen, key=str)
    if extra:
        raise OperatingPointError(
            f'{path} has predictions for {len(extra)} image id(s) that the test dataset of '
            f'{config} lacks (e.g. {extra[0]}): evaluate with the config the file was written '
            'with')
    return images
