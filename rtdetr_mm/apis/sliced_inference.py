"""Sliced inference: find small objects in a large image (issue 14.3).

A large image is cut into overlapping square patches (the last row and
column aligned to the image edge), every patch goes through the detector's
own test pipeline (so each is resized to the model's input, e.g. 640 x 640:
small objects keep their pixels), the boxes of each patch are shifted back
to the image, an optional full-image pass (the whole image downscaled by the
same pipeline) finds the objects larger than a patch, and everything is
merged by class-aware NMS (mmcv's ``batched_nms``, as mmdet's
``mmdet.utils.large_image.merge_results_by_nms``).

    model = load_detector(CONFIG, CHECKPOINT)
    result = sliced_inference(model, image_bgr, patch_size=640, overlap=0.25)
    result.pred_instances.bboxes  # (N, 4) xyxy pixels of the image

:func:`run_sliced_inference` is ``tools/misc/sliced_inference.py``: image
files in, drawn images and COCO-style JSON predictions out.

Box formats: every box here is xyxy in pixels: of a patch between the
detector and the shift, of the original image after it.

NOTE: what we reuse and what we wrote. mmdet 3.3's ``demo/large_image_demo.py``
slices with the ``sahi`` package, and ``mmdet.utils.large_image``'s
``shift_predictions`` / ``merge_results_by_nms`` import ``shift_bboxes``
from ``sahi`` on every call: they do not run without it. We add no
dependency (sahi brings its own OpenCV requirement and a dozen packages) for
what is, for boxes, an addition and an NMS: the patch grid is
:func:`tile_origins` (the grid of sahi's ``slice_image``), the shift adds
the patch origin, and the merge is mmcv's ``batched_nms`` with the same
arguments as ``merge_results_by_nms``. mmdet's ``inference_detector`` runs
one image per forward; :func:`predict_images` batches the patches through
the config's test pipeline (as ``DetInferencer`` adapts it) and
``model.test_step``.
"""
import copy
import json
import os
import os.path as osp
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import mmcv
import numpy as np
import torch
from mmcv.ops import batched_nms
from mmcv.transforms import Compose
from mmdet.evaluation import get_classes
from mmdet.registry import MODELS, VISUALIZERS
from mmdet.structures import DetDataSample
from mmdet.utils import get_test_pipeline_cfg
from mmdet.utils.misc import IMG_EXTENSIONS
from mmengine.dataset import pseudo_collate
from mmengine.model.utils import revert_sync_batchnorm
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint
from mmengine.structures import InstanceData
from mmengine.utils import scandir

from ..datasets.transforms.loading import RTDETRv2LoadImageFromFile
from ..datasets.walk import leaf_datasets
from ..engine.cli import load_config
from ..engine.runner.image_size import apply_image_size
from ..models.detectors.checkpoint_fit import require_exact_fit

#: smallest patch side: the coarsest feature map of the detectors is 1/32
MIN_PATCH_SIZE = 32


class SlicedInferenceError(ValueError):
    """A setting, config, checkpoint or IMAGES path that sliced inference
    cannot use; the message names the option or the file."""


class TileGrid(NamedTuple):
    """The patches of one image.

    Attributes:
        xs (list[int]): Left edge of each patch column (pixels), increasing.
        ys (list[int]): Top edge of each patch row.
        height (int): Patch height: ``min(patch_size, image height)``.
        width (int): Patch width: ``min(patch_size, image width)``.
    """
    xs: List[int]
    ys: List[int]
    height: int
    width: int

    @property
    def origins(self) -> List[Tuple[int, int]]:
        """(x, y) of every patch's top-left corner, row by row."""
        return [(x, y) for y in self.ys for x in self.xs]


def check_settings(patch_size: int = 640, overlap: float = 0.25, batch_size: int = 1,
                   nms_iou: float = 0.5, score_thr: float = 0.0, edge_margin: float = 2.0,
                   draw_thr: float = 0.3) -> None:
    """Raise :class:`SlicedInferenceError` naming the first option out of
    range (options are named as on the command line)."""
    def number(value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and \
            np.isfinite(value)

    rules = (
        ('--patch-size', patch_size, isinstance(patch_size, int) and
         not isinstance(patch_size, bool) and patch_size >= MIN_PATCH_SIZE,
         f'an integer >= {MIN_PATCH_SIZE} (pixels of the image, one side of a square patch)'),
        ('--overlap', overlap, number(overlap) and 0 <= overlap < 1,
         'a number in [0, 1): the share of a patch that its neighbour also covers'),
        ('--batch-size', batch_size, isinstance(batch_size, int) and batch_size >= 1,
         'an integer >= 1 (patches per forward pass)'),
        ('--nms-iou', nms_iou, number(nms_iou) and 0 < nms_iou <= 1,
         'a number in (0, 1]: boxes of a class overlapping more are merged'),
        ('--score-thr', score_thr, number(score_thr) and 0 <= score_thr <= 1,
         'a number in [0, 1]'),
        ('--edge-margin', edge_margin, number(edge_margin) and edge_margin >= 0,
         'a number of pixels >= 0'),
        ('--draw-thr', draw_thr, number(draw_thr) and 0 <= draw_thr <= 1, 'a number in [0, 1]'),
    )
    for option, value, ok, valid in rules:
        if not ok:
            raise SlicedInferenceError(f'{option} {value!r}: must be {valid}')


def tile_origins(height: int, width: int, patch_size: int, overlap: float) -> TileGrid:
    """The patch grid of a ``height`` x ``width`` image.

    Neighbouring patches share ``int(overlap * patch_size)`` pixels (the
    step is ``patch_size`` minus that, at least 1); the last column / row
    starts at ``width - patch_size`` / ``height - patch_size`` so that it
    ends on the image edge (it overlaps its neighbour more). A side shorter
    than a patch gives one patch of that side's length.

    Our own (sahi's ``slice_image`` computes the same grid): a dependency
    for eight lines is not worth it.
    """
    step = max(1, patch_size - int(overlap * patch_size))

    def starts(length: int) -> List[int]:
        if length <= patch_size:
            return [0]
        return list(range(0, length - patch_size, step)) + [length - patch_size]

    return TileGrid(starts(width), starts(height), min(patch_size, height),
                    min(patch_size, width))


def inference_pipeline(cfg) -> Compose:
    """The config's test pipeline for images in memory (BGR arrays): its
    file loader becomes mmdet's ``LoadImageFromNDArray`` and
    ``LoadAnnotations`` is dropped, as mmdet's ``DetInferencer`` does.

    The model's default scope must be set (:func:`load_detector` does)."""
    steps = copy.deepcopy(get_test_pipeline_cfg(cfg))

    def name(step) -> str:
        kind = step.get('type')
        return (kind if isinstance(kind, str) else getattr(kind, '__name__', '')).split('.')[-1]

    loaders = [i for i, step in enumerate(steps) if name(step).endswith('LoadImageFromFile')]
    if not loaders:
        raise SlicedInferenceError(
            'test_dataloader.dataset.pipeline: no LoadImageFromFile step to feed the patches '
            'through (sliced inference replaces it by LoadImageFromNDArray)')
    steps[loaders[0]] = dict(steps[loaders[0]], type='mmdet.LoadImageFromNDArray')
    return Compose([step for step in steps if name(step) != 'LoadAnnotations'])


def predict_images(model: torch.nn.Module, images: Sequence[np.ndarray], batch_size: int = 1,
                   pipeline: Optional[Callable] = None) -> List[DetDataSample]:
    """The detector's predictions on in-memory images, ``batch_size`` at a
    time through ``pipeline`` (default: :func:`inference_pipeline` of
    ``model.cfg``) and ``model.test_step``.

    Args:
        images: (H, W, 3) uint8 BGR arrays (views are copied).

    Returns:
        list[DetDataSample]: one per image, ``pred_instances`` with
        ``bboxes`` (N, 4) xyxy pixels of that image, ``scores``, ``labels``.
    """
    pipeline = pipeline or inference_pipeline(model.cfg)
    results: List[DetDataSample] = []
    for start in range(0, len(images), batch_size):
        batch = [pipeline(dict(img=np.ascontiguousarray(img), img_id=start + i))
                 for i, img in enumerate(images[start:start + batch_size])]
        with torch.no_grad():
            results.extend(model.test_step(pseudo_collate(batch)))
    return results


def _clip(instances: InstanceData, height: int, width: int) -> InstanceData:
    """Boxes clipped to [0, width] x [0, height].

    NOTE: RT-DETRv2 (official and ours) does not clip; a patch's box is
    clipped so that a box running past a cut edge counts as touching it,
    and the merged boxes stay on the image."""
    boxes = instances.bboxes.clone()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    instances.bboxes = boxes
    return instances


def _seen_whole_elsewhere(boxes: torch.Tensor, grid: TileGrid, col: int, row: int,
                          margin: float) -> torch.Tensor:
    """(N,) bool: the patch box (xyxy pixels of patch ``(col, row)``) ends
    within ``margin`` of a cut edge (a patch side inside the image) and its
    other side lies inside the neighbouring patch across that edge, which
    therefore sees all of the object this patch sees and more.

    NOTE: mmdet's ``large_image_demo.py`` keeps these truncated boxes; a half
    box has IoU 0.5 with the whole one (a third: 0.33), so NMS at 0.5 keeps
    both and the object is counted twice. Dropping them loses nothing for
    objects smaller than the overlap (they are whole in the neighbour);
    larger objects cut in every patch keep their pieces (the far side is
    not in the neighbour) and are the full-image pass's job."""
    x0, y0 = grid.xs[col], grid.ys[row]
    x1, y1, x2, y2 = (boxes[:, k] for k in range(4))
    drop = torch.zeros(len(boxes), dtype=torch.bool, device=boxes.device)
    if col + 1 < len(grid.xs):  # right side cut: the next column starts at xs[col + 1]
        drop |= (x2 >= grid.width - margin) & (x1 + x0 >= grid.xs[col + 1])
    if col > 0:  # left side cut: the previous column ends at xs[col - 1] + width
        drop |= (x1 <= margin) & (x2 + x0 <= grid.xs[col - 1] + grid.width)
    if row + 1 < len(grid.ys):
        drop |= (y2 >= grid.height - margin) & (y1 + y0 >= grid.ys[row + 1])
    if row > 0:
        drop |= (y1 <= margin) & (y2 + y0 <= grid.ys[row - 1] + grid.height)
    return drop


def sliced_inference(model: torch.nn.Module, image: np.ndarray, patch_size: int = 640,
                     overlap: float = 0.25, batch_size: int = 1, full_image: bool = True,
                     nms_iou: float = 0.5, score_thr: float = 0.0, edge_margin: float = 2.0,
                     pipeline: Optional[Callable] = None) -> DetDataSample:
    """Detect on the patches of ``image`` (and on the whole image), merged.

    Args:
        model: A detector in eval mode with ``cfg`` (:func:`load_detector`,
            mmdet's ``init_detector``).
        image: (H, W, 3) uint8 BGR.
        patch_size: Patch side in image pixels (>= 32); each patch is then
            resized by the model's test pipeline (to its input size).
        overlap: Share of a patch that its neighbour covers too, in [0, 1).
        batch_size: Patches per forward pass.
        full_image: Also run the whole image (downscaled by the pipeline),
            for objects larger than the overlap (skipped when one patch
            covers the image).
        nms_iou: Boxes of one class with IoU above it are merged (the
            highest score stays).
        score_thr: Predictions under it are dropped before the merge.
        edge_margin: Pixels from a cut edge within which a patch box counts
            as cut (see :func:`_seen_whole_elsewhere`).
        pipeline: The test pipeline (default :func:`inference_pipeline`), to
            build it once for many images.

    Returns:
        DetDataSample: ``pred_instances`` (``bboxes`` (N, 4) xyxy pixels of
        ``image``, ``scores``, ``labels``), sorted by score;
        ``ori_shape`` / ``img_shape`` the image's (h, w), ``num_patches``
        and ``full_image`` (whether the full-image pass ran).
    """
    check_settings(patch_size, overlap, batch_size, nms_iou, score_thr, edge_margin)
    pipeline = pipeline or inference_pipeline(model.cfg)
    height, width = image.shape[:2]
    grid = tile_origins(height, width, patch_size, overlap)
    patches = [image[y:y + grid.height, x:x + grid.width] for x, y in grid.origins]
    parts = []
    for index, sample in enumerate(predict_images(model, patches, batch_size, pipeline)):
        row, col = divmod(index, len(grid.xs))
        found = sample.pred_instances
        found = _clip(found[found.scores >= score_thr], grid.height, grid.width)
        found = found[~_seen_whole_elsewhere(found.bboxes, grid, col, row, edge_margin)]
        found.bboxes = found.bboxes + found.bboxes.new_tensor([grid.xs[col], grid.ys[row]] * 2)
        parts.append(found)
    if full_image and len(patches) > 1:  # one patch is the whole image already
        whole, = predict_images(model, [image], 1, pipeline)
        found = whole.pred_instances
        parts.append(_clip(found[found.scores >= score_thr], height, width))
    merged = InstanceData.cat(parts)
    if len(merged):
        _, keep = batched_nms(merged.bboxes, merged.scores, merged.labels,
                              dict(type='nms', iou_threshold=nms_iou))
        merged = merged[keep]
    result = DetDataSample(metainfo=dict(ori_shape=(height, width), img_shape=(height, width),
                                         num_patches=len(patches),
                                         full_image=bool(full_image and len(patches) > 1)))
    result.pred_instances = merged
    return result


def _require_file(path: str, what: str) -> None:
    if not osp.isfile(path):
        reason = 'is a directory' if osp.isdir(path) else 'no such file'
        raise SlicedInferenceError(f'{what} {path!r}: {reason}')


def _config_classes(cfg) -> Optional[tuple]:
    """``metainfo.classes`` of the config's test dataset (wrappers walked)."""
    dataset = cfg.get('test_dataloader', {}).get('dataset')
    for node in leaf_datasets(dataset, 'test_dataloader.dataset'):
        classes = (node.dataset.get('metainfo') or {}).get('classes')
        if classes:
            return tuple(classes)
    return None


def load_detector(config: str, checkpoint: str, device: Optional[str] = None,
                  cfg_options: Optional[dict] = None) -> torch.nn.Module:
    """The detector of ``config`` with ``checkpoint``'s weights, in eval
    mode on ``device`` (default: the first GPU, else the CPU).

    The config is read as ``tools/test.py`` reads it (``cfg_options``
    merged, ``image_size`` applied to the pipelines, the checkpoint must fit
    the model exactly). ``model.dataset_meta['classes']``: the checkpoint's
    ``meta.dataset_meta``, else the test dataset's ``metainfo.classes``,
    else COCO's 80.

    NOTE: mmdet's ``init_detector`` does the same steps but falls back to
    COCO's names without looking at the config.
    """
    _require_file(config, 'CONFIG')
    _require_file(checkpoint, 'CHECKPOINT')
    cfg = load_config(config, 'none', cfg_options, None)
    apply_image_size(cfg)
    require_exact_fit(cfg.model)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    meta = (load_checkpoint(model, checkpoint, map_location='cpu') or {}).get('meta') or {}
    dataset_meta = {k.lower(): v for k, v in (meta.get('dataset_meta') or {}).items()}
    if not dataset_meta.get('classes'):
        dataset_meta['classes'] = _config_classes(cfg) or get_classes('coco')
    model.dataset_meta = dataset_meta
    model.cfg = cfg
    device = device or ('cuda:0' if torch.cuda.is_available() else 'cpu')
    return model.to(device).eval()


def list_images(images: str) -> Tuple[List[str], str]:
    """The files of IMAGES: a file, a folder (its images, recursively, by
    extension) or a glob pattern (every file it matches).

    Returns:
        tuple[list[str], str]: sorted paths, and the folder they are named
        relative to in the outputs.
    """
    if osp.isdir(images):
        files = [osp.join(images, f) for f in sorted(scandir(images, recursive=True))
                 if f.lower().endswith(IMG_EXTENSIONS)]
        root = images
    elif osp.isfile(images):
        files, root = [images], osp.dirname(images)
    elif any(c in images for c in '*?['):
        import glob
        files = sorted(f for f in glob.glob(images, recursive=True) if osp.isfile(f))
        root = osp.commonpath([osp.dirname(osp.abspath(f)) for f in files]) if files else ''
    else:
        raise SlicedInferenceError(f'IMAGES {images!r}: no such file or folder')
    if not files:
        raise SlicedInferenceError(
            f'IMAGES {images!r}: no image file there (a folder is searched for '
            f'{", ".join(IMG_EXTENSIONS)}; a pattern matched nothing)')
    return files, root


def _coco_records(name: str, result: DetDataSample, classes: Sequence[str]) -> List[dict]:
    """COCO-style results of one image: ``bbox`` [x, y, w, h] pixels,
    ``category_id`` = label + 1 (ids 1..C in the order of ``classes``, as
    the datasets of ``tools/misc/make_demo_data.py`` number them)."""
    inst = result.pred_instances
    records = []
    for box, score, label in zip(inst.bboxes.tolist(), inst.scores.tolist(),
                                 inst.labels.tolist()):
        x1, y1, x2, y2 = box
        records.append(dict(
            file_name=name, category_id=int(label) + 1,
            category_name=classes[label] if label < len(classes) else None,
            bbox=[round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
            score=round(float(score), 5)))
    return records


def run_sliced_inference(config: str, checkpoint: str, images: str, out_dir: str,
                         patch_size: int = 640, overlap: float = 0.25, batch_size: int = 1,
                         full_image: bool = True, nms_iou: float = 0.5,
                         score_thr: float = 0.0, draw_thr: float = 0.3,
                         edge_margin: float = 2.0, device: Optional[str] = None,
                         cfg_options: Optional[dict] = None,
                         visualizer_name: str = 'rtdetr_mm_sliced_inference',
                         log: Callable[[str], None] = print) -> Dict[str, object]:
    """``tools/misc/sliced_inference.py``: :func:`sliced_inference` on every
    image of ``images`` (see :func:`list_images`); writes
    ``out_dir/predictions.json`` (COCO-style results of all images, named
    by ``file_name`` relative to the images' folder) and
    ``out_dir/vis/<file_name>`` (the image with its boxes of score above
    ``draw_thr``, drawn by mmdet's ``DetLocalVisualizer``).

    Returns:
        dict: ``json`` (its path), ``drawn`` (paths), ``detections``
        ({file_name: number of boxes}).

    Raises:
        SlicedInferenceError: an option out of range, a missing config,
            checkpoint or IMAGES path.
        ImageLoadError: an image that cannot be read (it names the file).
    """
    check_settings(patch_size, overlap, batch_size, nms_iou, score_thr, edge_margin, draw_thr)
    files, root = list_images(images)
    model = load_detector(config, checkpoint, device, cfg_options)
    pipeline = inference_pipeline(model.cfg)
    classes = tuple(model.dataset_meta['classes'])
    # a name of its own: mmengine keeps one visualizer per name in a process
    visualizer = VISUALIZERS.build(dict(type=model.cfg.get('visualizer', {}).get(
        'type', 'DetLocalVisualizer'), name=visualizer_name))
    visualizer.dataset_meta = model.dataset_meta
    loader = RTDETRv2LoadImageFromFile()  # raises ImageLoadError naming the file
    records, drawn, detections = [], [], {}
    for path in files:
        image = loader(dict(img_path=path))['img']
        result = sliced_inference(model, image, patch_size, overlap, batch_size, full_image,
                                  nms_iou, score_thr, edge_margin, pipeline)
        name = osp.relpath(osp.abspath(path), osp.abspath(root)) if root else osp.basename(path)
        records += _coco_records(name, result, classes)
        detections[name] = len(result.pred_instances)
        out_file = osp.join(out_dir, 'vis', name)
        visualizer.add_datasample(name, mmcv.bgr2rgb(image), data_sample=result, draw_gt=False,
                                  show=False, out_file=out_file, pred_score_thr=draw_thr)
        drawn.append(out_file)
        whole = ' + the full image' if result.full_image else ''
        log(f'{name}: {image.shape[1]}x{image.shape[0]}, {result.num_patches} patches{whole}, '
            f'{len(result.pred_instances)} boxes')
    os.makedirs(out_dir, exist_ok=True)
    json_path = osp.join(out_dir, 'predictions.json')
    with open(json_path, 'w') as f:
        json.dump(records, f)
    log(f'written: {json_path} ({len(records)} boxes), {len(drawn)} drawn images in '
        f'{osp.join(out_dir, "vis")}')
    return dict(json=json_path, drawn=drawn, detections=detections)
