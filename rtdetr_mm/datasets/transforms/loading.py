"""Image loading that always names the file it failed on, and why."""
import os.path as osp
from typing import Optional

import mmcv
from mmcv.transforms import LoadImageFromFile
from mmdet.registry import TRANSFORMS


class ImageLoadError(OSError):
    """An image file of the dataset is missing, empty or does not decode."""


def _describe(path: str, img_id, error: Optional[BaseException]) -> str:
    where = f'image file {path!r}' + (f' (image id {img_id})' if img_id is not None else '')
    local = '://' not in str(path)
    if local and not osp.exists(path):
        reason = 'no such file'
    elif local and osp.isfile(path) and osp.getsize(path) == 0:
        reason = 'the file is empty'
    else:
        detail = f' ({type(error).__name__}: {error})' if error is not None else ''
        reason = f'cannot be decoded as an image: corrupt, truncated or not an image{detail}'
    return f'cannot load {where}: {reason}'


def unreadable_image_error(path: str, img_id=None) -> Optional[ImageLoadError]:
    """Why the local image file ``path`` cannot be loaded, as the
    :class:`ImageLoadError` that :class:`RTDETRv2LoadImageFromFile` raises
    for it (missing, empty, or the bytes do not decode with mmcv's default
    decoder); None when it decodes or is not a local file (a URL).

    For the dataset (``RTDETRv2CocoDataset``), which calls it after a
    pipeline failure: our configs load with mmcv's own ``LoadImageFromFile``
    (mmdet's ``get_loading_pipeline``, used by its ``analyze_results.py``,
    keeps only that exact class), whose errors do not say what is wrong with
    the file. It reads and decodes the file once, on the failure path only.
    """
    if '://' in str(path):
        return None
    error = None
    if osp.isfile(path) and osp.getsize(path) > 0:
        try:
            with open(path, 'rb') as f:
                if mmcv.imfrombytes(f.read()) is not None:
                    return None
        except Exception as e:  # noqa: BLE001 - any decoder failure is the reason
            error = e
    return ImageLoadError(_describe(path, img_id, error))


@TRANSFORMS.register_module()
class RTDETRv2LoadImageFromFile(LoadImageFromFile):
    """mmcv's ``LoadImageFromFile`` (same arguments and outputs), raising
    :class:`ImageLoadError` with the path and image id when the file cannot
    be read.

    mmcv 2.1 raises a ``FileNotFoundError`` without the path for a missing
    file, OpenCV's ``cv2.error`` without the path for an empty one, and an
    ``assert`` (gone under ``python -O``) for bytes that do not decode.
    With ``ignore_empty=True`` a missing file still gives ``None`` (the
    dataset then draws another image), as in mmcv.

    NOTE: our configs load with mmcv's ``LoadImageFromFile`` itself (mmdet's
    ``get_loading_pipeline`` keeps only that exact class, so its
    ``analyze_results.py`` needs it); ``RTDETRv2CocoDataset`` gives the same
    message for their failures (:func:`unreadable_image_error`). This
    transform gives it with any dataset class, e.g. mmdet's ``CocoDataset``.

    Required keys: ``img_path`` (``img_id`` is quoted when present).
    Added keys: ``img`` ((H, W, 3) uint8 BGR by default), ``img_shape``,
    ``ori_shape``.
    """

    def transform(self, results: dict) -> Optional[dict]:
        path = results['img_path']
        try:
            out = super().transform(results)
        except Exception as e:  # noqa: BLE001 - re-raised with the path
            raise ImageLoadError(_describe(path, results.get('img_id'), e)) from e
        if out is not None and out.get('img') is None:  # assert stripped by -O
            raise ImageLoadError(_describe(path, results.get('img_id'), None))
        return out
