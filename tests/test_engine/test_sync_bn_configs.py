"""Every shipped RT-DETRv2 config trains with SyncBN on several GPUs, as the
official runtime (``sync_bn: True`` for every size; issue 15 item 5).

``sync_bn`` is a runner setting: mmengine's ``Runner.wrap_model`` calls
``mmengine.model.convert_sync_batchnorm(model, cfg.sync_bn)`` in every
distributed run (one process included) on GPUs. NCCL cannot run here, so
the conversion is applied to the built models directly: every trainable
BatchNorm (the neck's and the head's input projections, and the
backbone's where it trains) becomes a SyncBatchNorm; frozen backbone norms
stay frozen.
"""
import glob
import os.path as osp

import pytest
import torch
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.model import convert_sync_batchnorm

import rtdetr_mm  # noqa: F401
from rtdetr_mm.models.layers.frozen_bn import FrozenBatchNorm2d
from rtdetr_mm.testing import ROOT

CONFIGS = sorted(
    glob.glob(osp.join(ROOT, 'configs/rtdetrv2/*.py'))
    + glob.glob(osp.join(ROOT, 'configs/rtdetrv2_finetune/rtdetrv2_*.py'))
    + glob.glob(osp.join(ROOT, 'configs/rtdetrv2_demo/*.py')))


def test_every_shipped_config_is_found():
    names = {osp.basename(c) for c in CONFIGS}
    assert {'rtdetrv2_r18vd_4xb4-120e_coco.py', 'rtdetrv2_r34vd_4xb4-120e_coco.py',
            'rtdetrv2_r50vd_4xb4-72e_coco.py', 'rtdetrv2_r50vd-m_4xb4-84e_coco.py',
            'rtdetrv2_r101vd_4xb4-72e_coco.py', 'rtdetrv2_r50vd_1xb8-36e_custom.py',
            'rtdetrv2_r18vd_1xb8-36e_custom.py'} <= names


@pytest.mark.parametrize('config', CONFIGS, ids=osp.basename)
def test_config_sets_sync_bn(config):
    assert Config.fromfile(config).get('sync_bn') == 'torch'


@pytest.mark.parametrize('name, backbone_trains',
                         [('rtdetrv2_r18vd_4xb4-120e_coco.py', True),
                          ('rtdetrv2_r50vd_4xb4-72e_coco.py', False)])
def test_conversion_covers_every_trainable_batch_norm(name, backbone_trains):
    cfg = Config.fromfile(osp.join(ROOT, 'configs/rtdetrv2', name))
    model = MODELS.build(cfg.model)
    bn_names = {n for n, m in model.named_modules() if type(m) is torch.nn.BatchNorm2d}
    converted = convert_sync_batchnorm(model, cfg.sync_bn)
    sync_names = {n for n, m in converted.named_modules()
                  if isinstance(m, torch.nn.SyncBatchNorm)}
    assert sync_names == bn_names
    assert any(n.startswith('neck.') for n in sync_names)
    assert any(n.startswith('bbox_head.input_proj.') for n in sync_names)
    assert any(n.startswith('backbone.') for n in sync_names) == backbone_trains
    if not backbone_trains:
        assert any(isinstance(m, FrozenBatchNorm2d) for m in converted.backbone.modules())
