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
  category ids, missing image files, class names that differ from the json,
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
"""
import json
import math
import os.path as osp
from collections import Counter, OrderedDict, defaultdict
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from .walk import first_resize_scale, leaf_datasets

#: Top-level keys a COCO detection json must have.
REQUIRED_KEYS = ('images', 'annotations', 'categories')
#: Keys every ``images`` entry must have.
REQUIRED_IMAGE_KEYS = ('id', 'file_name', 'width', 'height')
#: Keys every ``annotations`` entry must have.
REQUIRED_ANN_KEYS = ('id', 'image_id', 'category_id', 'bbox')
#: Object-size thresholds (px, shorter box side at the training input size).
SIZE_THRESHOLDS = (8, 16, 32)
#: Warn when more than this share of boxes is under 8 px at the input size.
TINY_OBJECT_WARN_FRACTION = 0.25
#: Warn when more than this share of training images has no object.
EMPTY_IMAGE_WARN_FRACTION = 0.5
#: Examples quoted per finding (the count is always given).
MAX_EXAMPLES = 5

#: Reasons :func:`sanitize_box` gives, in the order it checks them.
BOX_FIXES = OrderedDict([
    ('clipped', 'partly outside the image, clipped to it'),
    ('negative_size', 'negative width or height, dropped'),
    ('zero_area', 'zero width or height, dropped'),
    ('outside_image', 'entirely outside the image, dropped'),
    ('too_small', 'under 1 px wide or high after clipping, dropped'),
])


class DatasetValidationError(ValueError):
    """Annotations or their config would break training.

    The message lists every error, each naming the file, image id,
    annotation id or config key at fault. ``report`` holds the full
    :class:`ValidationReport` (``None`` after unpickling).
    """

    def __init__(self, message: str, report: Optional['ValidationReport'] = None):
        super().__init__(message)
        self.report = report


@dataclass
class Finding:
    """One result of the validation.

    Attributes:
        level (str): ``'error'``, ``'warning'`` or ``'info'``.
        code (str): Stable identifier, e.g. ``'missing_image_file'``.
        message (str): Human-readable text naming what is at fault.
        count (int): How many items share this finding (annotations,
            images, ...); 1 for single facts.
    """
    level: str
    code: str
    message: str
    count: int = 1


@dataclass
class InputSize:
    """The network input size of a split, from its pipeline's ``Resize``.

    Attributes:
        h (int): Input height in pixels.
        w (int): Input width in pixels.
        keep_ratio (bool): mmdet ``Resize(keep_ratio=True)``: the image is
            scaled by one factor to fit ``(h, w)`` (long side to the long
            side, short side to the short side) instead of being stretched.
    """
    h: int
    w: int
    keep_ratio: bool = False

    def scale_factors(self, img_h: float, img_w: float) -> Tuple[float, float]:
        """(sy, sx) that take original-image pixels to input pixels."""
        if not self.keep_ratio:
            return self.h / img_h, self.w / img_w
        # mmcv.rescale_size: fit the long edge and the short edge
        long_edge, short_edge = max(self.h, self.w), min(self.h, self.w)
        s = min(long_edge / max(img_h, img_w), short_edge / min(img_h, img_w))
        return s, s


@dataclass
class ModelFacts:
    """What the validation needs to know about the detector.

    Attributes:
        num_classes (int, optional): Classes of the head.
        num_queries (int, optional): Object queries (detections per image).
        num_denoising (int, optional): Denoising-query budget (RT-DETR CDN);
            groups per batch = ``max(num_denoising // max_gt, 1)``.
        num_classes_key / num_queries_key / num_denoising_key (str): The
            config keys the values came from, quoted in messages.
    """
    num_classes: Optional[int] = None
    num_queries: Optional[int] = None
    num_denoising: Optional[int] = None
    num_classes_key: str = 'model.bbox_head.num_classes'
    num_queries_key: str = 'model.bbox_head.num_queries'
    num_denoising_key: str = 'model.bbox_head.num_denoising'


@dataclass
class BoxFixCounts:
    """How many boxes :func:`sanitize_box` clipped or dropped, by reason
    (keys of :data:`BOX_FIXES`)."""
    counts: Dict[str, int] = field(default_factory=lambda: {k: 0 for k in BOX_FIXES})

    @property
    def clipped(self) -> int:
        return self.counts['clipped']

    @property
    def dropped(self) -> int:
        return sum(v for k, v in self.counts.items() if k != 'clipped')

    def summary(self) -> str:
        """``'2 clipped to the image, 3 dropped (zero-area 1, ...)'``."""
        drops = ', '.join(f'{k.replace("_", "-")} {v}' for k, v in self.counts.items()
                          if k != 'clipped')
        return f'{self.clipped} clipped to the image, {self.dropped} dropped ({drops})'


@dataclass
class DatasetStats:
    """Statistics of the boxes kept after :func:`sanitize_box`.

    Attributes:
        num_images (int): Images in the json.
        num_annotations (int): Annotations in the json.
        num_boxes (int): Boxes kept (of the classes, not ignored).
        num_empty_images (int): Images without any kept box.
        max_gt (int): Most kept boxes in one image.
        max_gt_image_id: Image id holding ``max_gt`` boxes.
        class_counts (dict[str, int]): Kept boxes per class name, in
            ``metainfo.classes`` order.
        category_ids (dict[str, int]): json category id of each class.
        input_size (InputSize, optional): Size the object sizes refer to.
        size_fractions (dict[int, float]): Share of kept boxes whose shorter
            side is under each of :data:`SIZE_THRESHOLDS` px at
            ``input_size`` (original pixels when it is ``None``).
    """
    num_images: int = 0
    num_annotations: int = 0
    num_boxes: int = 0
    num_empty_images: int = 0
    max_gt: int = 0
    max_gt_image_id: Any = None
    class_counts: Dict[str, int] = field(default_factory=dict)
    category_ids: Dict[str, int] = field(default_factory=dict)
    input_size: Optional[InputSize] = None
    size_fractions: Dict[int, float] = field(default_factory=dict)

    @property
    def empty_fraction(self) -> float:
        return self.num_empty_images / self.num_images if self.num_images else 0.0


@dataclass
class ValidationReport:
    """Result of :func:`validate_coco`.

    Attributes:
        source (str): The annotation file (or a description of the dict).
        findings (list[Finding]): Errors, warnings and infos in check order.
        fixes (BoxFixCounts): Boxes clipped / dropped.
        stats (DatasetStats): Statistics of the kept boxes.
    """
    source: str
    findings: List[Finding] = field(default_factory=list)
    fixes: BoxFixCounts = field(default_factory=BoxFixCounts)
    stats: DatasetStats = field(default_factory=DatasetStats)

    def _level(self, level: str) -> List[Finding]:
        return [f for f in self.findings if f.level == level]

    @property
    def errors(self) -> List[Finding]:
        return self._level('error')

    @property
    def warnings(self) -> List[Finding]:
        return self._level('warning')

    @property
    def infos(self) -> List[Finding]:
        return self._level('info')

    @property
    def ok(self) -> bool:
        return not self.errors

    def codes(self, level: Optional[str] = None) -> List[str]:
        return [f.code for f in self.findings if level is None or f.level == level]

    def add(self, level: str, code: str, message: str, count: int = 1) -> None:
        self.findings.append(Finding(level, code, message, count))


def raise_on_errors(report: ValidationReport, context: str = '') -> None:
    """Raise :class:`DatasetValidationError` listing every error of
    ``report`` (``context`` says which dataset / config key it is)."""
    if report.ok:
        return
    where = f' ({context})' if context else ''
    lines = [f'{len(report.errors)} error(s) in dataset {report.source!r}{where} '
             'that would break training:']
    lines += [f'  - [{f.code}] {f.message}' for f in report.errors]
    raise DatasetValidationError('\n'.join(lines), report)


class _Examples:
    """Collects items per finding code: a count and the first examples."""

    def __init__(self):
        self.count: Counter = Counter()
        self.examples: Dict[str, List[str]] = defaultdict(list)

    def add(self, code: str, example: str) -> None:
        self.count[code] += 1
        if len(self.examples[code]) < MAX_EXAMPLES:
            self.examples[code].append(example)

    def text(self, code: str) -> str:
        more = self.count[code] - len(self.examples[code])
        return '; '.join(self.examples[code]) + (f'; ... and {more} more' if more else '')

    def emit(self, report: ValidationReport, level: str, code: str, what: str) -> None:
        if self.count[code]:
            report.add(level, code, f'{self.count[code]} {what}: {self.text(code)}',
                       self.count[code])


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
# Classes
# --------------------------------------------------------------------------
def _normalise_name(name: str) -> str:
    return ''.join(ch for ch in str(name).lower() if ch.isalnum())


def check_classes_value(classes: Any, report: ValidationReport,
                        key: str = 'metainfo.classes') -> Optional[Tuple[str, ...]]:
    """Check that ``classes`` is a non-empty tuple/list of distinct names.

    Returns:
        tuple[str] | None: The names, or ``None`` after adding an error.
    """
    if isinstance(classes, str):
        names = tuple(s.strip() for s in classes.split(',') if s.strip()) or (classes,)
        report.add('error', 'classes_is_string',
                   f'{key} is the string {classes!r}, not a tuple of class names: write '
                   f'{key}={names!r} (a one-element tuple needs the trailing comma)')
        return None
    if classes is None:
        report.add('error', 'classes_missing', f'{key} is not set')
        return None
    if not isinstance(classes, (list, tuple)) or not all(isinstance(c, str) for c in classes):
        report.add('error', 'classes_not_names',
                   f'{key} must be a tuple of class-name strings, got {classes!r}')
        return None
    if not classes:
        report.add('error', 'classes_empty', f'{key} is empty')
        return None
    dup = sorted(n for n, c in Counter(classes).items() if c > 1)
    if dup:
        report.add('error', 'classes_duplicate', f'{key} lists {dup} more than once')
        return None
    return tuple(classes)


def check_categories(coco: dict, classes: Tuple[str, ...], source: str,
                     report: ValidationReport, key: str = 'metainfo.classes',
                     allow_extra_categories: bool = False) -> Dict[int, int]:
    """Compare the json's categories with ``classes``.

    mmdet's ``CocoDataset`` keeps the categories whose *name* is in
    ``classes`` and gives label ``i`` to the ``i``-th of them in json order,
    so ids may be 1-based or have gaps, but every class must appear exactly
    once by name.

    Returns:
        dict[int, int]: category id -> label, as mmdet builds it.
    """
    cats = [c for c in coco.get('categories', []) if isinstance(c, dict)]
    bad = [c for c in coco.get('categories', []) if not isinstance(c, dict)
           or 'id' not in c or 'name' not in c]
    if bad:
        report.add('error', 'malformed_category',
                   f'{len(bad)} categories in {source!r} lack "id" or "name": {bad[:MAX_EXAMPLES]}',
                   len(bad))
    cats = [c for c in cats if 'id' in c and 'name' in c]
    dup_ids = sorted(i for i, n in Counter(c['id'] for c in cats).items() if n > 1)
    if dup_ids:
        report.add('error', 'duplicate_category_id',
                   f'category ids {dup_ids} appear more than once in {source!r}')
    dup_names = sorted(n for n, k in Counter(c['name'] for c in cats).items() if k > 1)
    if dup_names:
        report.add('error', 'duplicate_category_name',
                   f'category names {dup_names} appear more than once in {source!r} '
                   '(mmdet would give one class several labels, past num_classes)')
    json_names = [c['name'] for c in cats]
    missing = [n for n in classes if n not in json_names]
    extra = [n for n in json_names if n not in classes]
    if missing:
        hints = []
        for n in missing:
            near = [j for j in extra if _normalise_name(j) == _normalise_name(n)]
            if near:
                hints.append(f'{n!r} vs json {near[0]!r}')
        hint = f' (spelling differs: {", ".join(hints)})' if hints else ''
        report.add('error', 'class_name_mismatch',
                   f'{key} names missing from the categories of {source!r}: {missing}{hint}; '
                   f'json names: {json_names}; {key}: {list(classes)}. mmdet matches '
                   f'categories by name: fix {key} or the json')
    used = Counter(a.get('category_id') for a in coco.get('annotations', [])
                   if isinstance(a, dict))
    name_of = {c['id']: c['name'] for c in cats}
    extra_used = {n: sum(used[i] for i, m in name_of.items() if m == n) for n in extra}
    extra_with_anns = {n: k for n, k in extra_used.items() if k}
    if extra_with_anns:
        level = 'warning' if allow_extra_categories else 'error'
        what = ('ignored (allow_extra_categories=True)' if allow_extra_categories
                else f'silently dropped by mmdet; add the names to {key} or pass '
                'allow_extra_categories=True to the dataset to train on a subset')
        report.add(level, 'extra_categories',
                   f'categories of {source!r} not in {key}: {extra_with_anns} '
                   f'(name: annotations); their annotations would be {what}',
                   sum(extra_with_anns.values()))
    extra_unused = [n for n in extra if n not in extra_with_anns]
    if extra_unused:
        report.add('warning', 'extra_categories_unused',
                   f'categories of {source!r} not in {key} and without annotations: '
                   f'{extra_unused}')
    matched = [c for c in cats if c['name'] in classes]
    cat2label = {c['id']: i for i, c in enumerate(matched)}
    if not missing and not dup_names and [c['name'] for c in matched] != list(classes):
        report.add('warning', 'category_order',
                   f'the categories of {source!r} are in the order '
                   f'{[c["name"] for c in matched]}, {key} in the order {list(classes)}: mmdet '
                   'gives label i to the i-th json category, so training and COCO evaluation '
                   'agree, but class names in logs, per-class AP and drawings will be swapped; '
                   f'list {key} in the json order')
    ids = sorted(c['id'] for c in matched)
    if ids and ids != list(range(len(ids))):
        kind = 'start at 1' if ids == list(range(1, len(ids) + 1)) else 'are not contiguous'
        report.add('info', 'category_ids',
                   f'category ids {ids} {kind}: fine, mmdet maps categories to labels 0..'
                   f'{len(ids) - 1} by name')
    return cat2label


def check_num_classes(classes: Tuple[str, ...], model: ModelFacts, report: ValidationReport,
                      key: str = 'metainfo.classes') -> None:
    """The head must have one class per name of ``classes``."""
    if model.num_classes is None or model.num_classes == len(classes):
        return
    report.add('error', 'num_classes_mismatch',
               f'{model.num_classes_key}={model.num_classes} but {key} has {len(classes)} '
               f'names {list(classes)}: set {model.num_classes_key}={len(classes)} (labels '
               f'>= num_classes crash the matcher and the loss)')


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
    disk under ``img_dir`` (when given; local paths only) and, with
    ``verify_images``, that each file decodes and has the json's size.

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
        _check_image_files(images, img_dir, source, report, verify_images)
    return images


def _check_image_files(images: Dict[Any, dict], img_dir: str, source: str,
                       report: ValidationReport, verify_images: bool) -> None:
    ex = _Examples()
    for img_id, img in images.items():
        path = osp.join(img_dir, img['file_name'])
        if not osp.isfile(path):
            ex.add('missing_image_file', f'{path!r} (image id {img_id})')
            continue
        if not verify_images:
            continue
        import cv2
        data = np.fromfile(path, dtype=np.uint8)
        decoded = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
        if decoded is None:
            ex.add('unreadable_image', f'{path!r} (image id {img_id})')
        elif decoded.shape[:2] != (img['height'], img['width']):
            ex.add('image_size_mismatch',
                   f'{path!r} (image id {img_id}) is {decoded.shape[0]}x{decoded.shape[1]}, '
                   f'json says {img["height"]}x{img["width"]}')
    ex.emit(report, 'error', 'missing_image_file',
            f'image files of {source!r} missing under {img_dir!r}')
    ex.emit(report, 'error', 'unreadable_image', 'image files that do not decode')
    ex.emit(report, 'warning', 'image_size_mismatch',
            'images whose size differs from the json (boxes are checked against the json size)')


def check_annotations(coco: dict, source: str, images: Dict[Any, dict],
                      cat2label: Dict[int, int], known_cat_ids: Iterable[int],
                      report: ValidationReport) -> Dict[Any, List[Tuple[int, List[float]]]]:
    """Annotation entries: required keys, unique ids, known image and
    category ids, well-formed boxes; counts the box fixes of
    :func:`sanitize_box` into ``report.fixes``.

    Returns:
        dict: image id -> [(category id, xyxy box)] of the kept boxes
        (categories of ``cat2label`` only, ``ignore`` annotations left out).
    """
    ex = _Examples()
    fix_ex = _Examples()
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
            fix_ex.add(reason, f'annotation id {ann_id} (image id {ann["image_id"]}, '
                       f'{img["width"]}x{img["height"]}): bbox={ann["bbox"]}')
        if box is None or ann.get('ignore', False) or ann['category_id'] not in cat2label:
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
    for reason, what in BOX_FIXES.items():
        fix_ex.emit(report, 'info' if reason == 'clipped' else 'warning', f'box_{reason}',
                    f'boxes {what}')
    return kept


# --------------------------------------------------------------------------
# Statistics and model facts
# --------------------------------------------------------------------------
def compute_stats(images: Dict[Any, dict], kept: Dict[Any, List[Tuple[int, List[float]]]],
                  classes: Tuple[str, ...], cat_names: Dict[int, str],
                  input_size: Optional[InputSize], stats: DatasetStats) -> DatasetStats:
    """Fill ``stats`` from the kept boxes (see :class:`DatasetStats`);
    ``cat_names`` maps the json category ids of the classes to their names."""
    stats.num_boxes = sum(len(v) for k, v in kept.items() if k in images)
    stats.num_empty_images = sum(1 for i in images if not kept.get(i))
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
        if stats.num_boxes == 0:
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


# --------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------
def validate_coco_dict(coco: dict, classes: Any, source: str = '<dict>',
                       img_dir: Optional[str] = None, model: Optional[ModelFacts] = None,
                       input_size: Optional[InputSize] = None, test_mode: bool = False,
                       classes_key: str = 'metainfo.classes',
                       allow_extra_categories: bool = False,
                       verify_images: bool = False) -> ValidationReport:
    """Validate a loaded COCO detection dict.

    Args:
        coco (dict): The parsed json.
        classes: ``metainfo.classes`` as configured (a tuple of names; a
            string or anything else is reported as an error).
        source (str): Name of the annotation file, quoted in messages.
        img_dir (str, optional): Folder the ``file_name`` s are relative to;
            ``None`` skips the file checks.
        model (ModelFacts, optional): Head facts to check against.
        input_size (InputSize, optional): Training input size for the
            object-size statistics.
        test_mode (bool): Evaluation split: ``annotations`` may be absent,
            no denoising / empty-image warnings.
        classes_key (str): Config key of ``classes`` for messages.
        allow_extra_categories (bool): json categories outside ``classes``
            with annotations are a warning instead of an error.
        verify_images (bool): Decode every image (slow) to find unreadable
            files and sizes that differ from the json.

    Returns:
        ValidationReport: errors, warnings, infos, box fixes and statistics.
    """
    report = ValidationReport(source)
    model = model or ModelFacts()
    names = check_classes_value(classes, report, classes_key)
    if not check_top_level(coco, source, report, test_mode):
        return report
    report.stats.num_images = len(coco['images'])
    report.stats.num_annotations = len(coco.get('annotations', []))
    images = check_images(coco, source, report, img_dir, verify_images)
    if names is None:
        cat2label = {}
    else:
        check_num_classes(names, model, report, classes_key)
        cat2label = check_categories(coco, names, source, report, classes_key,
                                     allow_extra_categories)
    known_cat_ids = [c['id'] for c in coco['categories'] if isinstance(c, dict) and 'id' in c]
    kept = check_annotations(coco, source, images, cat2label, known_cat_ids, report)
    if names is not None:
        cat_names = {c['id']: c['name'] for c in coco['categories']
                     if isinstance(c, dict) and c.get('id') in cat2label}
        compute_stats(images, kept, names, cat_names, input_size, report.stats)
        check_stats(report.stats, names, model, source, report, test_mode)
    return report


def validate_coco(ann_file: str, classes: Any, img_dir: Optional[str] = None,
                  model: Optional[ModelFacts] = None, input_size: Optional[InputSize] = None,
                  test_mode: bool = False, classes_key: str = 'metainfo.classes',
                  allow_extra_categories: bool = False,
                  verify_images: bool = False) -> Tuple[ValidationReport, Optional[dict]]:
    """:func:`validate_coco_dict` on the json file ``ann_file``.

    Returns:
        tuple: the report and the parsed json (``None`` when it could not be
        read; the report then holds the error), so that a caller can reuse
        it instead of parsing the file again.
    """
    report = ValidationReport(ann_file)
    coco = load_coco_json(ann_file, report)
    if coco is None:
        check_classes_value(classes, report, classes_key)
        return report, None
    full = validate_coco_dict(coco, classes, ann_file, img_dir, model, input_size, test_mode,
                              classes_key, allow_extra_categories, verify_images)
    return full, coco


# --------------------------------------------------------------------------
# Config facts (shared by the runner-level check and check_dataset.py)
# --------------------------------------------------------------------------
@dataclass
class DatasetFacts:
    """One COCO dataset of a config, with paths resolved as mmengine does.

    Attributes:
        split (str): ``'train'``, ``'val'`` or ``'test'``.
        key (str): Config key of the dataset, e.g.
            ``'train_dataloader.dataset.datasets[1]'``.
        dataset_type (str): Its registered type.
        ann_file (str): Annotation file (``data_root`` joined).
        img_dir (str, optional): Image folder (``data_root`` +
            ``data_prefix.img``).
        classes: ``metainfo.classes`` as mmengine will see it (a meta file
            path is read into a list; the class default when not set).
        classes_key (str): Config key of ``classes``.
        test_mode (bool): The dataset's ``test_mode``.
        allow_extra_categories (bool): From the dataset config.
        input_size (InputSize, optional): From the pipeline's ``Resize``.
    """
    split: str
    key: str
    dataset_type: str
    ann_file: str
    img_dir: Optional[str]
    classes: Any
    classes_key: str
    test_mode: bool = False
    allow_extra_categories: bool = False
    input_size: Optional[InputSize] = None


def _get(obj, key, default=None):
    try:
        return obj.get(key, default)
    except AttributeError:
        return default


def pipelines_input_size(pipelines: Sequence[Any]) -> Optional[InputSize]:
    """The size set by the first ``Resize`` with a ``scale`` of the innermost
    of ``pipelines`` that has one (see :func:`~rtdetr_mm.datasets.walk.first_resize_scale`)."""
    found = first_resize_scale(pipelines)
    return None if found is None else InputSize(h=found[0], w=found[1], keep_ratio=found[2])


def _resolve_classes(ds_cfg, dataset_cls) -> Any:
    metainfo = _get(ds_cfg, 'metainfo') or {}
    classes = _get(metainfo, 'classes')
    if classes is None:
        return (getattr(dataset_cls, 'METAINFO', {}) or {}).get('classes')
    if isinstance(classes, str) and osp.isfile(classes):  # a meta file, as mmengine reads it
        with open(classes) as f:
            return [line.rstrip('\n\r') for line in f if line.strip()]
    return classes


def _join(root: str, path: Optional[str]) -> Optional[str]:
    if path is None:
        return None
    if not root or osp.isabs(path) or '://' in path:
        return path
    return osp.join(root, path)


def config_model_facts(cfg) -> ModelFacts:
    """num_classes / num_queries / num_denoising of ``cfg.model``, from the
    head (``model.bbox_head``) or, for detectors that keep them there
    (DINO's ``num_queries``), from ``model``."""
    model = _get(cfg, 'model') or {}
    head = _get(model, 'bbox_head') or {}
    facts = ModelFacts()
    for name in ('num_classes', 'num_queries', 'num_denoising'):
        for prefix, node in (('model.bbox_head', head), ('model', model)):
            if _get(node, name) is not None:
                setattr(facts, name, int(node[name]))
                setattr(facts, f'{name}_key', f'{prefix}.{name}')
                break
    return facts


def config_dataset_facts(cfg, splits: Sequence[str] = ('train', 'val', 'test')
                         ) -> List[DatasetFacts]:
    """The COCO datasets of ``cfg``'s ``<split>_dataloader`` s, through
    dataset wrappers (RepeatDataset, ClassBalancedDataset, ConcatDataset,
    MultiImageMixDataset: any dict with ``dataset`` / ``datasets``).

    Datasets that are not ``CocoDataset`` subclasses are skipped. The same
    (ann_file, img_dir) is listed once per split.
    """
    from mmdet.datasets import CocoDataset
    from mmdet.registry import DATASETS
    from mmengine.registry import init_default_scope
    init_default_scope(_get(cfg, 'default_scope') or 'mmdet')
    facts: List[DatasetFacts] = []
    for split in splits:
        loader = _get(cfg, f'{split}_dataloader')
        if loader is None:
            continue
        seen = set()
        for node in leaf_datasets(_get(loader, 'dataset'), f'{split}_dataloader.dataset'):
            ds_cfg, key = node.dataset, node.key
            ds_type = _get(ds_cfg, 'type')
            ds_cls = DATASETS.get(ds_type) if isinstance(ds_type, str) else ds_type
            if not isinstance(ds_cls, type) or not issubclass(ds_cls, CocoDataset):
                continue
            root = _get(ds_cfg, 'data_root') or ''
            ann_file = _join(root, _get(ds_cfg, 'ann_file') or '')
            prefix = _get(_get(ds_cfg, 'data_prefix') or {}, 'img')
            img_dir = _join(root, prefix) if prefix is not None else None
            if (ann_file, img_dir) in seen:
                continue
            seen.add((ann_file, img_dir))
            input_size = pipelines_input_size(node.pipelines)
            facts.append(DatasetFacts(
                split=split, key=key, dataset_type=ds_cls.__name__, ann_file=ann_file,
                img_dir=img_dir, classes=_resolve_classes(ds_cfg, ds_cls),
                classes_key=f'{key}.metainfo.classes',
                test_mode=bool(_get(ds_cfg, 'test_mode', False)),
                allow_extra_categories=bool(_get(ds_cfg, 'allow_extra_categories', False)),
                input_size=input_size))
    return facts


def recheck_validated(facts: DatasetFacts, validated: ValidationReport,
                      model: ModelFacts) -> ValidationReport:
    """The config-level checks of a dataset that validated its annotations
    itself (``RTDETRv2CocoDataset.validation_report``), without reading the
    json again: the classes value, ``num_classes`` and the GT count vs the
    queries and the denoising budget, plus the errors of ``validated``.

    Returns:
        ValidationReport: a new report sharing ``validated``'s statistics
        and box fixes; its findings are only those of these checks.
    """
    report = ValidationReport(validated.source, fixes=validated.fixes, stats=validated.stats)
    report.findings.extend(f for f in validated.findings if f.level == 'error')
    names = check_classes_value(facts.classes, report, facts.classes_key)
    if names is not None:
        check_num_classes(names, model, report, facts.classes_key)
        check_model_stats(validated.stats, model, validated.source, report, facts.test_mode)
    return report


def validate_config(cfg, splits: Sequence[str] = ('train', 'val', 'test'),
                    check_model: bool = True, verify_images: bool = False,
                    validated: Optional[Dict[str, ValidationReport]] = None
                    ) -> List[Tuple[DatasetFacts, ValidationReport]]:
    """Validate every COCO dataset of ``cfg``'s ``splits`` against its
    classes and the model (:func:`config_model_facts`).

    Args:
        validated (dict[str, ValidationReport], optional): Reports of
            datasets already built and validated, by annotation file: those
            get :func:`recheck_validated` instead of a full validation.
    """
    model = config_model_facts(cfg) if check_model else ModelFacts()
    validated = validated or {}
    results = []
    for facts in config_dataset_facts(cfg, splits):
        if facts.ann_file in validated:
            report = recheck_validated(facts, validated[facts.ann_file], model)
        else:
            report, _ = validate_coco(facts.ann_file, facts.classes, facts.img_dir, model,
                                      facts.input_size, facts.test_mode, facts.classes_key,
                                      facts.allow_extra_categories, verify_images)
        results.append((facts, report))
    return results


def check_config_datasets(cfg, splits: Sequence[str] = ('train', 'val'),
                          validated: Optional[Dict[str, ValidationReport]] = None
                          ) -> List[Tuple[DatasetFacts, ValidationReport]]:
    """Runner-level check at run start: validate the datasets of ``splits``
    (see :func:`validate_config`) and raise :class:`DatasetValidationError`
    on the first dataset with errors (its message names the dataset's
    config key).

    Returns:
        list: (facts, report) of every dataset checked, for logging.
    """
    results = validate_config(cfg, splits, validated=validated)
    for facts, report in results:
        raise_on_errors(report, facts.key)
    return results
