"""Checks of one COCO detection json: reading the file, its top-level keys,
the image entries (and their files on disk), the annotation entries and
their boxes (:func:`sanitize_box`, the one box convention of the package).
The classes are checked in :mod:`.class_checks`."""
import json
import math
import os.path as osp
from collections import defaultdict
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from .image_files import check_image_files
from .report import BOX_FIXES, ValidationReport, _Examples

#: Top-level keys a COCO detection json must have.
REQUIRED_KEYS = ('images', 'annotations', 'categories')
#: Keys every ``images`` entry must have.
REQUIRED_IMAGE_KEYS = ('id', 'file_name', 'width', 'height')
#: Keys every ``annotations`` entry must have.
REQUIRED_ANN_KEYS = ('id', 'image_id', 'category_id', 'bbox')


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------
def load_coco_json(ann_file: str, report: ValidationReport) -> Optional[dict]:
    """Read ``ann_file``; on failure add an error naming the file (and the
    json error's line / column) to ``report`` and return ``None``."""
    if not osp.isfile(ann_file):
        report.add('error', 'missing_ann_file', f'annotation file {ann_file!r} does not exist')
        return None
    try:
        with open(ann_file, 'rb') as f:
            coco = json.loads(f.read())
    except json.JSONDecodeError as e:
        report.add('error', 'malformed_json',
                   f'annotation file {ann_file!r} is not valid json: {e.msg} at line {e.lineno} '
                   f'column {e.colno} (char {e.pos})')
        return None
    except (OSError, UnicodeDecodeError) as e:
        report.add('error', 'unreadable_ann_file',
                   f'cannot read annotation file {ann_file!r}: {e}')
        return None
    if not isinstance(coco, dict):
        report.add('error', 'malformed_json',
                   f'annotation file {ann_file!r} holds a json {type(coco).__name__}, '
                   'not an object with images / annotations / categories')
        return None
    return coco


# --------------------------------------------------------------------------
# Boxes
# --------------------------------------------------------------------------
def box_is_malformed(bbox: Any) -> bool:
    """True unless ``bbox`` is 4 finite numbers."""
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        return True
    return not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                   for v in bbox)


def sanitize_box(bbox: Sequence[float], img_w: float, img_h: float
                 ) -> Tuple[Optional[List[float]], Optional[str]]:
    """Clip a COCO box to its image or decide to drop it.

    Args:
        bbox (Sequence[float]): COCO ``[x, y, w, h]`` in pixels (4 finite
            numbers, see :func:`box_is_malformed`).
        img_w (float): Image width in pixels.
        img_h (float): Image height in pixels.

    Returns:
        tuple: ``(xyxy, reason)``. ``xyxy`` is ``[x1, y1, x2, y2]`` pixels
        inside ``[0, img_w] x [0, img_h]``, or ``None`` when the box is
        dropped; ``reason`` is ``None`` for an untouched box, otherwise a key
        of :data:`BOX_FIXES` (``'clipped'`` for a kept, clipped box).
    """
    x, y, w, h = (float(v) for v in bbox)
    if w < 0 or h < 0:
        return None, 'negative_size'
    if w == 0 or h == 0:
        return None, 'zero_area'
    x1, y1, x2, y2 = max(x, 0.0), max(y, 0.0), min(x + w, float(img_w)), min(y + h, float(img_h))
    if x2 <= x1 or y2 <= y1:
        return None, 'outside_image'
    if x2 - x1 < 1 or y2 - y1 < 1:
        return None, 'too_small'
    clipped = (x1, y1, x2, y2) != (x, y, x + w, y + h)
    return [x1, y1, x2, y2], ('clipped' if clipped else None)


# --------------------------------------------------------------------------
# Images and annotations
# --------------------------------------------------------------------------
def check_top_level(coco: dict, source: str, report: ValidationReport,
                    test_mode: bool = False) -> bool:
    """Required top-level keys; ``annotations`` may be absent in test mode
    (COCO test-dev style). Returns False when validation cannot go on."""
    ok = True
    for key in REQUIRED_KEYS:
        if key not in coco:
            if key == 'annotations' and test_mode:
                report.add('info', 'no_annotations',
                           f'{source!r} has no "annotations" (test mode: images only)')
                continue
            report.add('error', 'missing_key',
                       f'annotation file {source!r} has no top-level key {key!r} '
                       f'(found {sorted(coco)})')
            ok = False
        elif not isinstance(coco[key], list):
            report.add('error', 'malformed_key',
                       f'"{key}" in {source!r} must be a list, got {type(coco[key]).__name__}')
            ok = False
    return ok


def check_images(coco: dict, source: str, report: ValidationReport,
                 img_dir: Optional[str] = None, verify_images: bool = False) -> Dict[Any, dict]:
    """Image entries: required keys, unique ids, positive sizes, files on
    disk under ``img_dir`` (when given; local paths only) and their sizes
    against the json (a sample; all, decoded, with ``verify_images``: see
    :func:`~.image_files.check_image_files`).

    Returns:
        dict: image id -> image entry, for the valid entries.
    """
    ex = _Examples()
    images: Dict[Any, dict] = {}
    for idx, img in enumerate(coco['images']):
        if not isinstance(img, dict) or any(k not in img for k in REQUIRED_IMAGE_KEYS):
            got = sorted(img) if isinstance(img, dict) else type(img).__name__
            img_id = img.get('id') if isinstance(img, dict) else None
            ex.add('malformed_image', f'images[{idx}] (id {img_id}) has {got}')
            continue
        if img['id'] in images:
            ex.add('duplicate_image_id', f'image id {img["id"]}')
            continue
        w, h = img['width'], img['height']
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
                   for v in (w, h)):
            ex.add('bad_image_size', f'image id {img["id"]} ({img["file_name"]}): '
                   f'width={w!r}, height={h!r}')
            continue
        images[img['id']] = img
    ex.emit(report, 'error', 'malformed_image',
            f'image entries in {source!r} lack one of {list(REQUIRED_IMAGE_KEYS)}')
    ex.emit(report, 'error', 'duplicate_image_id', f'duplicate image ids in {source!r}')
    ex.emit(report, 'error', 'bad_image_size',
            f'images in {source!r} with a non-positive width or height')
    if img_dir is not None and '://' not in img_dir:
        check_image_files(images, img_dir, source, report, verify_images)
    return images


def check_annotations(coco: dict, source: str, images: Dict[Any, dict],
                      cat2label: Dict[int, int], known_cat_ids: Iterable[int],
                      report: ValidationReport) -> Dict[Any, List[Tuple[int, List[float]]]]:
    """Annotation entries: required keys, unique ids, known image and
    category ids, well-formed boxes; counts the box fixes of
    :func:`sanitize_box` into ``report.fixes`` (a warning / info per reason,
    naming the annotation ids), the crowd boxes into ``report.stats``
    (``num_ignored``, ``ignored_image_ids``) and the annotations without
    ``area`` (``num_without_area``, ``without_area_examples``).

    Crowd boxes (``iscrowd=1``) are *ignored*, not kept: mmdet's
    ``CocoDataset`` gives them ``ignore_flag=1``, ``PackDetInputs`` moves
    them to ``ignored_instances`` and they never reach the matcher or the
    loss.

    Returns:
        dict: image id -> [(category id, xyxy box)] of the kept boxes
        (categories of ``cat2label`` only; ``ignore`` and crowd annotations
        left out).
    """
    ex = _Examples()
    fix_ex = _Examples()
    area_ex = _Examples()
    ignored_images = set()
    known_cat_ids = set(known_cat_ids)
    seen_ids = set()
    kept: Dict[Any, List[Tuple[int, List[float]]]] = defaultdict(list)
    for idx, ann in enumerate(coco.get('annotations', [])):
        if not isinstance(ann, dict) or any(k not in ann for k in REQUIRED_ANN_KEYS):
            got = sorted(ann) if isinstance(ann, dict) else type(ann).__name__
            ex.add('malformed_annotation',
                   f'annotations[{idx}] (id {ann.get("id") if isinstance(ann, dict) else None}) '
                   f'has {got}')
            continue
        ann_id = ann['id']
        if ann_id in seen_ids:
            ex.add('duplicate_annotation_id', f'annotation id {ann_id}')
            continue
        seen_ids.add(ann_id)
        if ann['image_id'] not in images:
            ex.add('unknown_image_id', f'annotation id {ann_id} -> image_id {ann["image_id"]!r}')
            continue
        if ann['category_id'] not in known_cat_ids:
            ex.add('unknown_category_id',
                   f'annotation id {ann_id} -> category_id {ann["category_id"]!r}')
            continue
        if box_is_malformed(ann['bbox']):
            ex.add('malformed_bbox', f'annotation id {ann_id} (image id {ann["image_id"]}): '
                   f'bbox={ann["bbox"]!r}')
            continue
        img = images[ann['image_id']]
        box, reason = sanitize_box(ann['bbox'], img['width'], img['height'])
        if reason is not None:
            report.fixes.counts[reason] += 1
            fix_ex.add(f'box_{reason}', f'annotation id {ann_id} (image id {ann["image_id"]}, '
                       f'{img["width"]}x{img["height"]}): bbox={ann["bbox"]}')
        if 'area' not in ann:
            area_ex.add('missing_area', f'annotation id {ann_id}')
        if box is None or ann.get('ignore', False) or ann['category_id'] not in cat2label:
            continue
        if ann.get('iscrowd', False):
            report.stats.num_ignored += 1
            ignored_images.add(ann['image_id'])
            continue
        kept[ann['image_id']].append((ann['category_id'], box))
    ex.emit(report, 'error', 'malformed_annotation',
            f'annotations in {source!r} lack one of {list(REQUIRED_ANN_KEYS)}')
    ex.emit(report, 'error', 'duplicate_annotation_id', f'duplicate annotation ids in {source!r}')
    ex.emit(report, 'error', 'unknown_image_id',
            f'annotations in {source!r} refer to an image id that is not in "images"')
    ex.emit(report, 'error', 'unknown_category_id',
            f'annotations in {source!r} refer to a category id that is not in "categories"')
    ex.emit(report, 'error', 'malformed_bbox',
            f'annotations in {source!r} whose bbox is not 4 finite numbers [x, y, w, h]')
    report.stats.ignored_image_ids = sorted(ignored_images, key=str)
    report.stats.num_without_area = area_ex.count['missing_area']
    report.stats.without_area_examples = area_ex.text('missing_area')
    for reason, what in BOX_FIXES.items():
        fix_ex.emit(report, 'info' if reason == 'clipped' else 'warning', f'box_{reason}',
                    f'boxes {what}')
    return kept
