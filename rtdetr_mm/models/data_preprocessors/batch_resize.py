"""Official RT-DETR(v2) multi-scale training: resize whole batches."""
import random
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmdet.structures import SampleList
from mmdet.structures.bbox import BaseBoxes
from mmengine.dist import broadcast, get_dist_info
from mmengine.model import BaseModule
from torch import Tensor

Scale = Union[int, Sequence[int]]


@MODELS.register_module()
class RTDETRv2BatchResize(BaseModule):
    """Resize every training batch to a size drawn from an explicit list.

    The official ``BatchImageCollateFunction`` (``rtdetrv2_pytorch``): one
    size per batch, drawn uniformly from ``scales`` (the official list has
    640 three times, so 640 is drawn 3/13 of the time), applied to the whole
    (B, 3, H, W) tensor with ``F.interpolate`` (default mode: nearest, as the
    official call that passes no mode). Use it as a ``batch_augments`` entry
    of the data preprocessor; mmdet calls batch augments only in training,
    after normalisation and padding.

    Boxes: the official code keeps cxcywh boxes normalised to the image, so
    they need no change. Here ``gt_instances.bboxes`` (and
    ``ignored_instances.bboxes``) are xyxy pixels of the input tensor
    (``HorizontalBoxes`` or an (N, 4) tensor) and are scaled by
    (sx, sy, sx, sy) = (new_w / W, new_h / H, ...). Every data sample's
    metainfo follows:

    * ``batch_input_shape`` and ``pad_shape`` = (new_h, new_w);
    * ``img_shape`` = the unpadded image part scaled by (sy, sx), rounded
      (equal to (new_h, new_w) when the batch had no padding, as with the
      fixed-size RT-DETR pipeline);
    * ``scale_factor`` (w, h) multiplied by (sx, sy), so that dividing boxes
      predicted on the resized batch by it still gives original-image pixels;
    * ``homography_matrix`` (if present) left-multiplied by diag(sx, sy, 1).

    Randomness: the size is drawn with Python's ``random`` (seeded by the
    runner's ``randomness.seed``); in distributed training rank 0's draw is
    broadcast so every rank resizes to the same size.

    NOTE: mmdet's ``BatchSyncRandomResize`` is not reused: it draws the size
    from a range of multiples of ``size_divisor`` (not an explicit list with
    repeats), keeps the batch aspect ratio, always interpolates bilinearly,
    and does not update ``scale_factor``.

    Args:
        scales (Sequence[int | tuple[int, int]], optional): Absolute sizes:
            square sides or (h, w). Give this or ``scale_ratios``.
        scale_ratios (Sequence[float], optional): Sizes relative to the
            batch received, so the range follows ``image_size``: the
            official list is 640 x (0.75, 0.8, ..., 1.25) with 1.0 three
            times (= 480 ... 800 for a 640 batch).
        size_divisor (int): Relative sizes are rounded to multiples of it.
        mode (str): ``F.interpolate`` mode. Defaults to 'nearest'.
        align_corners (bool, optional): Passed to ``F.interpolate`` for the
            linear modes. Defaults to None.
        interval (int): Draw a new size every ``interval`` batches (1 = every
            batch, as the official code).
        init_cfg (dict, optional): Unused; ``BaseModule`` argument.

    Attributes:
        enabled (bool): When False the module returns its inputs unchanged;
            ``RTDETRv2AugSwitchHook`` switches it off for the last epochs.
    """

    def __init__(self, scales: Optional[Sequence[Scale]] = None,
                 scale_ratios: Optional[Sequence[float]] = None, size_divisor: int = 32,
                 mode: str = 'nearest', align_corners: Optional[bool] = None,
                 interval: int = 1, init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if (scales is None) == (scale_ratios is None):
            raise ValueError('RTDETRv2BatchResize needs exactly one of `scales` (absolute '
                             'sizes) and `scale_ratios` (relative to the incoming batch)')
        if interval < 1:
            raise ValueError(f'interval must be >= 1, got {interval}')
        if scale_ratios is not None:
            if not scale_ratios or min(scale_ratios) <= 0:
                raise ValueError(f'scale_ratios must be positive numbers, got {scale_ratios!r}')
        elif not scales:
            raise ValueError('RTDETRv2BatchResize needs at least one scale')
        self.scale_ratios = None if scale_ratios is None else [float(r) for r in scale_ratios]
        self.size_divisor = size_divisor
        self.scales: List[Tuple[int, int]] = []
        for s in scales or []:
            if isinstance(s, (int, float, np.integer)):
                hw = (int(s), int(s))
            else:
                hw = tuple(int(v) for v in s)
            if len(hw) != 2 or min(hw) <= 0:
                raise ValueError(f'a scale is an int or (h, w), got {s!r}')
            self.scales.append(hw)
        self.mode = mode
        self.align_corners = align_corners
        self.interval = interval
        self.enabled = True
        self._calls = 0
        self._size: Optional[Tuple[int, int]] = None

    def candidate_sizes(self, batch_hw: Tuple[int, int]) -> List[Tuple[int, int]]:
        """The (h, w) sizes a batch of size ``batch_hw`` is resized to.

        ``scales`` as given, or each of ``scale_ratios`` times ``batch_hw``
        rounded to the nearest multiple of ``size_divisor``.
        """
        if self.scale_ratios is None:
            return self.scales
        div = self.size_divisor
        return [(max(div, int(round(r * batch_hw[0] / div)) * div),
                 max(div, int(round(r * batch_hw[1] / div)) * div)) for r in self.scale_ratios]

    def _draw_size(self, batch_hw: Tuple[int, int], device: torch.device) -> Tuple[int, int]:
        """Draw one of :meth:`candidate_sizes`; rank 0's draw wins in DDP."""
        sizes = self.candidate_sizes(batch_hw)
        index = random.randrange(len(sizes))
        if get_dist_info()[1] > 1:  # the only host read of a device value here
            shared = torch.tensor([index], device=device)
            broadcast(shared, src=0)
            index = int(shared.item())
        return sizes[index]

    def forward(self, inputs: Tensor, data_samples: SampleList) -> Tuple[Tensor, SampleList]:
        """Resize the batch and its annotations.

        Args:
            inputs (Tensor): (B, C, H, W) normalised, padded batch.
            data_samples (list[DetDataSample]): ``gt_instances.bboxes`` in
                xyxy pixels of ``inputs``; metainfo with ``img_shape`` and
                ``scale_factor`` (w, h).

        Returns:
            tuple[Tensor, list[DetDataSample]]: the (B, C, new_h, new_w)
            batch and the same data samples, updated in place.
        """
        if not self.enabled:
            return inputs, data_samples
        h, w = inputs.shape[-2:]
        if self._size is None or self._calls % self.interval == 0:
            self._size = self._draw_size((h, w), inputs.device)
        self._calls += 1
        new_h, new_w = self._size
        if (new_h, new_w) == (h, w):
            return inputs, data_samples
        kwargs = {} if self.mode in ('nearest', 'area', 'nearest-exact') else \
            dict(align_corners=self.align_corners)
        inputs = F.interpolate(inputs, size=(new_h, new_w), mode=self.mode, **kwargs)
        sx, sy = new_w / w, new_h / h
        for sample in data_samples:
            meta = sample.metainfo
            img_h, img_w = meta.get('img_shape', (h, w))[:2]
            sf_w, sf_h = meta.get('scale_factor', (1.0, 1.0))[:2]
            update = dict(img_shape=(min(new_h, int(round(img_h * sy))),
                                     min(new_w, int(round(img_w * sx)))),
                          batch_input_shape=(new_h, new_w),
                          pad_shape=(new_h, new_w),
                          scale_factor=(sf_w * sx, sf_h * sy))
            if meta.get('homography_matrix') is not None:
                matrix = np.asarray(meta['homography_matrix'])
                update['homography_matrix'] = (np.diag([sx, sy, 1.0]) @ matrix).astype(
                    matrix.dtype)
            sample.set_metainfo(update)
            for key in ('gt_instances', 'ignored_instances'):
                if key in sample and 'bboxes' in sample.get(key):
                    instances = sample.get(key)
                    instances.bboxes = self._scale_boxes(instances.bboxes, sx, sy)
        return inputs, data_samples

    @staticmethod
    def _scale_boxes(boxes: Union[Tensor, BaseBoxes], sx: float, sy: float
                     ) -> Union[Tensor, BaseBoxes]:
        """Scale (N, 4) xyxy pixel boxes by (sx, sy)."""
        if isinstance(boxes, BaseBoxes):
            boxes.rescale_((sx, sy))
            return boxes
        return boxes * boxes.new_tensor([sx, sy, sx, sy])
