"""Report types of the dataset validation: the findings, the box fixes, the
statistics and the report that holds them, the facts the checks are given
(:class:`InputSize`, :class:`ModelFacts`), :func:`raise_on_errors` and the
helper that turns counted examples into findings."""
from collections import Counter, OrderedDict, defaultdict
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

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

    # the public path, as tracebacks and pickles name the error
    __module__ = 'rtdetr_mm.datasets.validation'

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
    num_denoising_key: str = 'model.bbox_head.dn_cfg.num_denoising'


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
        num_ignored (int): Boxes of the classes with ``iscrowd=1``: valid,
            but ignored by training (mmdet's ``ignore_flag``).
        ignored_image_ids (list): Images holding at least one of them.
        num_ignored_only_images (int): Images whose only usable boxes are
            crowd boxes (no kept box left).
        num_empty_images (int): Images without any kept box.
        has_annotations_key (bool): The json has an ``annotations`` key.
        num_without_area (int): Annotations without an ``area`` key
            (pycocotools' ``COCOeval`` reads it).
        without_area_examples (str): The first of their ids, for messages.
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
    num_ignored: int = 0
    ignored_image_ids: List[Any] = field(default_factory=list)
    num_ignored_only_images: int = 0
    num_empty_images: int = 0
    has_annotations_key: bool = True
    num_without_area: int = 0
    without_area_examples: str = ''
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
