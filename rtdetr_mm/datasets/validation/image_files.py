"""Checks of the image files a COCO json names: that each exists and, for a
sample of them (all with ``verify_images``), that its size on disk is the
json's ``width`` / ``height``.

Boxes are clipped and dropped against the json size
(:func:`~.coco_checks.sanitize_box`) while the pipeline resizes the real
image, so a wrong json size silently drops or misplaces boxes. By default
the size is read from the file header (no decode) for
:func:`size_sample` of the images; ``verify_images`` decodes every file as
mmdet's loader does (``mmcv.imfrombytes``, OpenCV, colour).
"""
import os.path as osp
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .report import ValidationReport, _Examples

#: Images whose header size is read by default: the first half of them in
#: json order, the rest evenly spaced over the json.
IMAGE_SIZE_SAMPLE = 16

#: EXIF orientations that turn the image by 90 degrees (width <-> height).
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)
_EXIF_ORIENTATION = 0x0112


def size_sample(num_images: int, sample: int = IMAGE_SIZE_SAMPLE) -> List[int]:
    """Indices (json order) of the images whose size is checked by default:
    the first ``sample // 2`` and ``sample - sample // 2`` evenly spaced
    over all ``num_images`` (deterministic; all when there are fewer)."""
    if num_images <= sample:
        return list(range(num_images))
    first = list(range(sample // 2))
    spaced = np.linspace(0, num_images - 1, sample - len(first)).round().astype(int).tolist()
    picked = sorted(set(first) | set(spaced))
    # fill up to `sample` (rounding may coincide with the first ones)
    extra = (i for i in range(len(first), num_images) if i not in picked)
    while len(picked) < sample:
        picked.append(next(extra))
    return sorted(picked)


def header_image_size(path: str) -> Tuple[Tuple[int, int], ...]:
    """The (height, width) mmdet's loader gives ``path``, from the file
    header only (PIL opens lazily; nothing is decoded).

    OpenCV's ``IMREAD_COLOR`` (what ``mmcv.imfrombytes`` uses) applies the
    EXIF orientation, so a JPEG whose orientation turns it by 90 degrees is
    loaded with width and height swapped.

    Returns:
        tuple: the accepted (h, w) sizes: one, or both the stored and the
        turned size for a non-JPEG file with a turning EXIF orientation
        (NOTE: whether OpenCV applies EXIF to PNG / WebP depends on its
        version; the decode of ``verify_images`` is exact).

    Raises:
        OSError: The file is not an image PIL can identify.
    """
    from PIL import Image
    with Image.open(path) as img:
        w, h = img.size
        try:
            orientation = img.getexif().get(_EXIF_ORIENTATION)
        except Exception:  # noqa: BLE001 - a broken EXIF block: OpenCV ignores it too
            orientation = None
        fmt = img.format
    if orientation not in _TRANSPOSING_ORIENTATIONS:
        return ((h, w),)
    return ((w, h),) if fmt == 'JPEG' else ((w, h), (h, w))


def decoded_image_size(path: str) -> Optional[Tuple[int, int]]:
    """(height, width) of ``path`` decoded as mmdet's loader decodes it
    (OpenCV, colour, EXIF orientation applied); ``None`` when it does not
    decode."""
    import cv2
    data = np.fromfile(path, dtype=np.uint8)
    decoded = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    return None if decoded is None else decoded.shape[:2]


def check_image_files(images: Dict[Any, dict], img_dir: str, source: str,
                      report: ValidationReport, verify_images: bool = False,
                      sample: int = IMAGE_SIZE_SAMPLE) -> None:
    """Every file of ``images`` (image id -> json entry) exists under
    ``img_dir``; the sizes of :func:`size_sample` of them (all, decoded,
    with ``verify_images``) equal the json's ``height`` x ``width``.

    Findings: ``missing_image_file``, ``unreadable_image`` and
    ``image_size_mismatch`` (errors, naming the file, the image id and both
    sizes), and an info ``image_size_sample`` saying how many were checked.
    """
    ex = _Examples()
    checked = set(range(len(images))) if verify_images else set(size_sample(len(images), sample))
    num_checked = 0
    for idx, (img_id, img) in enumerate(images.items()):
        path = osp.join(img_dir, img['file_name'])
        if not osp.isfile(path):
            ex.add('missing_image_file', f'{path!r} (image id {img_id})')
            continue
        if idx not in checked:
            continue
        num_checked += 1
        if verify_images:
            size = decoded_image_size(path)
            sizes = None if size is None else (size,)
        else:
            try:
                sizes = header_image_size(path)
            except Exception:  # noqa: BLE001 - PIL cannot identify it: not an image
                sizes = None
        if sizes is None:
            ex.add('unreadable_image', f'{path!r} (image id {img_id})')
        elif (img['height'], img['width']) not in sizes:
            h, w = sizes[0]
            ex.add('image_size_mismatch',
                   f'{path!r} (image id {img_id}) is {h}x{w} (h x w) on disk, the json says '
                   f'height={img["height"]}, width={img["width"]}')
    ex.emit(report, 'error', 'missing_image_file',
            f'image files of {source!r} missing under {img_dir!r}')
    ex.emit(report, 'error', 'unreadable_image', 'image files that do not decode')
    ex.emit(report, 'error', 'image_size_mismatch',
            f'images of {source!r} whose size differs from the json width/height (boxes are '
            'clipped and dropped against the json size, the model sees the file: fix '
            'width/height in the json)')
    how = ('decoded' if verify_images else
           'header sizes read (the first ones and evenly spaced ones)')
    more = ('' if verify_images or num_checked == len(images) else
            '; check_dataset.py --verify-images, or verify_images=True on the dataset or '
            'RTDETRv2DatasetCheckHook, checks all')
    report.add('info', 'image_size_sample',
               f'image sizes of {source!r} checked against the json for {num_checked} of '
               f'{len(images)} images ({how}){more}')
