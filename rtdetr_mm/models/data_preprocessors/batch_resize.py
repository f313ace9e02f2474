"""Official RT-DETR multi-scale training: resize whole batches to a random size."""
import random
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmdet.structures import SampleList
from mmdet.structures.bbox import BaseBoxes
from mmengine.dist import broadcast, get_dist_info


@MODELS.register_module()
class RTDETRv2BatchResize(nn.Module):
    """Resize every training batch to a size drawn from ``scales``.

    The official ``BatchImageCollateFunction``: one size per batch, drawn
    uniformly from an explicit list (640 appears three times, so it is drawn
    more often), applied with ``F.interpolate`` (nearest by default) to the
    whole (B, 3, H, W) tensor. GT boxes (xyxy pixels) and the metas
    ``img_shape``/``batch_input_shape``/``pad_shape``/``scale_factor`` follow.

    NOTE: mmdet's ``BatchSyncRandomResize`` is not reused: it draws from a
    range (not a list) and always interpolates bilinearly.

    Args:
        scales (Sequence[int | tuple[int, int]]): Square sizes or (h, w).
        mode (str): ``F.interpolate`` mode.
        interval (int): Draw a new size every ``interval`` batches.
    """

    def __init__(self, scales: Sequence[Union[int, Tuple[int, int]]], mode: str = 'nearest',
                 interval: int = 1) -> None:
        super().__init__()
        self.scales: List[Tuple[int, int]] = [
            (s, s) if isinstance(s, int) else (int(s[0]), int(s[1])) for s in scales]
        self.mode = mode
        self.interval = interval
        self.enabled = True  # switched off by RTDETRv2AugSwitchHook
        self._iter = 0
        self._size: Optional[Tuple[int, int]] = None

    def _draw_size(self, device) -> Tuple[int, int]:
        """Same size on every rank: rank 0 draws, the others receive it."""
        index = torch.tensor(random.randrange(len(self.scales)), device=device)
        if get_dist_info()[1] > 1:
            broadcast(index, 0)
        return self.scales[int(index)]

    def forward(self, inputs: torch.Tensor, data_samples: SampleList
                ) -> Tuple[torch.Tensor, SampleList]:
        """
        Args:
            inputs (Tensor): (B, 3, H, W) batch.
            data_samples (list[DetDataSample]): With gt_instances.bboxes in
                xyxy pixels of ``inputs``.

        Returns:
            tuple: resized inputs and the updated data samples.
        """
        if not self.enabled:
            return inputs, data_samples
        if self._iter % self.interval == 0 or self._size is None:
            self._size = self._draw_size(inputs.device)
        self._iter += 1
        h, w = inputs.shape[-2:]
        new_h, new_w = self._size
        if (new_h, new_w) == (h, w):
            return inputs, data_samples
        inputs = F.interpolate(inputs, size=(new_h, new_w), mode=self.mode)
        sx, sy = new_w / w, new_h / h
        for ds in data_samples:
            img_h, img_w = ds.metainfo['img_shape'][:2]
            old_sf = ds.metainfo.get('scale_factor', (1.0, 1.0))
            ds.set_metainfo(dict(
                img_shape=(int(img_h * sy), int(img_w * sx)),
                batch_input_shape=(new_h, new_w),
                pad_shape=(new_h, new_w),
                scale_factor=(old_sf[0] * sx, old_sf[1] * sy)))
            if 'gt_instances' in ds:
                bboxes = ds.gt_instances.bboxes
                if isinstance(bboxes, BaseBoxes):
                    bboxes.rescale_((sx, sy))
                else:
                    ds.gt_instances.bboxes = bboxes * bboxes.new_tensor([sx, sy, sx, sy])
        return inputs, data_samples
