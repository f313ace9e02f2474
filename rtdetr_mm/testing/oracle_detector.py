"""An oracle detector of solid squares, and large images of small squares,
for the sliced-inference test (issue 14.3).

A random-weight RT-DETRv2 finds nothing, and training one in a test is too
slow; this detector finds the squares of :func:`draw_squares_image` in ITS
INPUT (after the test pipeline's resize) by thresholding and connected
components, and, like a real detector, misses an object that the resize
leaves with fewer than ``min_area`` input pixels. So a large image passed
whole (downscaled) loses its small squares and its patches keep them.

Registered in mmdet's ``MODELS`` when this module is imported (tests only;
``import rtdetr_mm`` does not import it).
"""
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from mmdet.models.detectors.base import BaseDetector
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData

#: BGR colour of each class: 0 green, 1 magenta (max channel 230 of 255)
SQUARE_COLOURS = ((40, 230, 40), (230, 40, 230))
#: the background is uniform noise in [0, BACKGROUND_MAX]
BACKGROUND_MAX = 40


@MODELS.register_module()
class OracleSquareDetector(BaseDetector):
    """Finds bright solid squares in its (normalised) input.

    A pixel is foreground when its largest channel is >= ``threshold``
    (inputs in [0, 1]: the data preprocessor divides by 255); every
    4-connected foreground component of at least ``min_area`` pixels is a
    detection: its bounding box (divided by ``scale_factor``: xyxy pixels of
    the original image), label 0 when its mean green exceeds its mean red
    (RGB input) else 1, score its mean largest channel.

    Args:
        min_area (int): Smallest component (input pixels) reported.
        threshold (float): Foreground level in [0, 1].
        data_preprocessor (dict): mmdet's ``DetDataPreprocessor`` with
            ``mean=[0, 0, 0], std=[255, 255, 255], bgr_to_rgb=True``.
    """

    def __init__(self, min_area: int = 24, threshold: float = 0.6,
                 data_preprocessor: Optional[dict] = None, init_cfg=None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.min_area = min_area
        self.threshold = threshold

    def _find(self, image: torch.Tensor) -> InstanceData:
        """(3, h, w) RGB in [0, 1] -> boxes xyxy in input pixels."""
        rgb = image.detach().float().cpu().numpy()
        level = rgb.max(0)
        mask = (level >= self.threshold).astype(np.uint8)
        count, components, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
        boxes, scores, labels = [], [], []
        for k in range(1, count):
            left, top, w, h, area = stats[k]
            if area < self.min_area:
                continue
            pixels = components == k
            boxes.append([left, top, left + w, top + h])
            scores.append(float(level[pixels].mean()))
            labels.append(0 if rgb[1][pixels].mean() > rgb[0][pixels].mean() else 1)
        return InstanceData(bboxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                            scores=torch.tensor(scores, dtype=torch.float32),
                            labels=torch.tensor(labels, dtype=torch.long))

    def predict(self, batch_inputs: torch.Tensor, batch_data_samples: list,
                rescale: bool = True) -> list:
        results = []
        for image, sample in zip(batch_inputs, batch_data_samples):
            h, w = sample.img_shape  # the resized image, before batch padding
            found = self._find(image[:, :h, :w])
            if rescale and 'scale_factor' in sample:
                found.bboxes = found.bboxes / found.bboxes.new_tensor(
                    sample.scale_factor).repeat(2)
            results.append(found)
        return self.add_pred_to_datasample(batch_data_samples, results)

    def loss(self, batch_inputs, batch_data_samples):
        raise NotImplementedError('the oracle is not trained')

    def _forward(self, batch_inputs, batch_data_samples=None):
        raise NotImplementedError('the oracle has no tensor outputs')

    def extract_feat(self, batch_inputs):
        raise NotImplementedError('the oracle has no features')


def oracle_config(input_size: Tuple[int, int] = (320, 320), min_area: int = 24,
                  threshold: float = 0.6) -> Config:
    """A config of the oracle: mmdet's data preprocessor and a test pipeline
    that resizes every image to ``input_size`` (h, w) as RT-DETRv2's does
    (``keep_ratio=False``)."""
    h, w = input_size
    return Config(dict(
        default_scope='mmdet',
        model=dict(type='OracleSquareDetector', min_area=min_area, threshold=threshold,
                   data_preprocessor=dict(type='DetDataPreprocessor', mean=[0, 0, 0],
                                          std=[255, 255, 255], bgr_to_rgb=True)),
        test_dataloader=dict(dataset=dict(pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='Resize', scale=(w, h), keep_ratio=False),
            dict(type='PackDetInputs',
                 meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
        ]))))


def build_oracle(cfg: Optional[Config] = None) -> torch.nn.Module:
    """The oracle of ``cfg`` (default :func:`oracle_config`) in eval mode,
    with ``model.cfg`` set as mmdet's ``init_detector`` sets it."""
    cfg = cfg or oracle_config()
    init_default_scope(cfg.default_scope)
    model = MODELS.build(cfg.model).eval()
    model.cfg = cfg
    model.dataset_meta = dict(classes=('green', 'magenta'))
    return model


def draw_squares_image(height: int, width: int, squares: Sequence[Tuple[int, int, int, int]],
                       seed: int = 0) -> np.ndarray:
    """A (height, width, 3) uint8 BGR image: noise in [0, BACKGROUND_MAX]
    and each square ``(x, y, side, label)`` filled with
    ``SQUARE_COLOURS[label]`` over the pixels ``[x, x + side) x [y, y + side)``
    (its box, xyxy pixels: ``[x, y, x + side, y + side]``)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, BACKGROUND_MAX + 1, (height, width, 3), dtype=np.uint8)
    for x, y, side, label in squares:
        image[y:y + side, x:x + side] = SQUARE_COLOURS[label]
    return image


def place_squares(height: int, width: int, count: int, sides: Tuple[int, int],
                  fixed: Sequence[Tuple[int, int, int, int]] = (), gap: int = 40,
                  seed: int = 0) -> List[Tuple[int, int, int, int]]:
    """``fixed`` squares plus ``count`` random ones (side uniform in
    ``sides``, label 0 or 1), each at least ``gap`` pixels from every other
    and from the image border, so that no two merge after a downscale."""
    rng = np.random.default_rng(seed)
    squares = list(fixed)

    def free(x: int, y: int, side: int) -> bool:
        return all(x + side + gap <= x2 or x2 + s2 + gap <= x or
                   y + side + gap <= y2 or y2 + s2 + gap <= y for x2, y2, s2, _ in squares)

    for _ in range(count):
        for _ in range(1000):
            side = int(rng.integers(sides[0], sides[1] + 1))
            x = int(rng.integers(gap, width - side - gap))
            y = int(rng.integers(gap, height - side - gap))
            if free(x, y, side):
                squares.append((x, y, side, int(rng.integers(0, 2))))
                break
        else:
            raise ValueError(f'no room for {count} squares of {sides} px in {width}x{height}')
    return squares
