"""The GPU configs feed the GPU without a blocking copy (issue 15 item 4):
the COCO and fine-tune loaders pin their batches (``pin_memory``) and the
data preprocessor copies them with ``non_blocking=True``; the CPU demo
does not pin (torch only warns there). What a CPU cannot show: that the
copy overlaps the previous step on a GPU."""
import glob
import os.path as osp

import pytest
import torch
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmengine.config import Config
from torch.overrides import TorchFunctionMode

import rtdetr_mm  # noqa: F401
from rtdetr_mm.testing import ROOT

GPU_CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs/rtdetrv2/*.py'))
                     + glob.glob(osp.join(ROOT, 'configs/rtdetrv2_finetune/rtdetrv2_*.py')))
DEMO = osp.join(ROOT, 'configs/rtdetrv2_demo/rtdetrv2_r18vd-demo_1xb4-12e_shapes.py')


class ToCalls(TorchFunctionMode):
    """The ``non_blocking`` argument of every ``Tensor.to`` call."""

    def __init__(self):
        super().__init__()
        self.non_blocking = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.to:
            self.non_blocking.append(kwargs.get('non_blocking', False))
        return func(*args, **kwargs)


def _copies(cfg):
    preprocessor = MODELS.build(cfg.model.data_preprocessor)
    sample = DetDataSample(metainfo=dict(img_shape=(64, 64), pad_shape=(64, 64)))
    data = dict(inputs=[torch.zeros(3, 64, 64, dtype=torch.uint8)], data_samples=[sample])
    with ToCalls() as calls:
        preprocessor(data, training=False)
    return calls.non_blocking


@pytest.mark.parametrize('config', GPU_CONFIGS, ids=osp.basename)
def test_gpu_configs_pin_and_copy_without_waiting(config):
    cfg = Config.fromfile(config)
    assert cfg.train_dataloader.pin_memory is True and cfg.val_dataloader.pin_memory is True
    copies = _copies(cfg)
    assert copies and all(copies), copies  # the image batch's copy included


def test_cpu_demo_does_not_pin():
    cfg = Config.fromfile(DEMO)
    assert not cfg.train_dataloader.get('pin_memory', False)
    assert not cfg.val_dataloader.get('pin_memory', False)
