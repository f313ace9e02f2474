"""Small r18vd / r50vd RT-DETRv2 models with calibrated random weights, for
the tests that compare the reparameterised (fused) detector with the
unfused one (tests/test_models/test_reparameterize*.py), and how they
compare detections.

The models keep the configs' real backbones (vd shortcuts; trainable BN in
r18, frozen BN in the r50 backbone next to the trainable BN of the neck and
head) with a 64-channel encoder / decoder, at 96 x 128.
"""
import copy
import os.path as osp
from typing import Dict, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn

from . import ROOT
from .model_utils import calibrate_batch_norms_, redraw_like_trained_

CONFIGS = dict(
    r18vd=osp.join(ROOT, 'configs/rtdetrv2/rtdetrv2_r18vd_4xb4-120e_coco.py'),
    r50vd=osp.join(ROOT, 'configs/rtdetrv2/rtdetrv2_r50vd_4xb4-72e_coco.py'))
SMALL = dict(
    neck=dict(hidden_dim=64, dim_feedforward=128, num_heads=4),
    bbox_head=dict(num_classes=4, in_channels=(64, 64, 64), hidden_dim=64, num_heads=4,
                   dim_feedforward=128, num_layers=2, num_queries=50,
                   dn_cfg=dict(num_denoising=20)),
    test_cfg=dict(max_per_img=100))
INPUT_SIZE = (96, 128)  # (H, W)
SCORE_TOL, BOX_TOL = 1e-4, 0.01  # px
RESIDUAL_SCALE = 0.25


def small_model_cfg(name: str, num_classes: Optional[int] = None):
    """The ``name`` config (``CONFIGS``) with the :data:`SMALL` model."""
    from mmengine.config import Config
    cfg = Config.fromfile(CONFIGS[name])
    cfg.merge_from_dict(dict(model=SMALL))
    if num_classes is not None:
        cfg.model.bbox_head.num_classes = num_classes
    return cfg


def calibrated_model(model_cfg, calib_images: torch.Tensor, seed: int = 0) -> nn.Module:
    """``model_cfg`` (an RT-DETRv2 model config) built with random weights
    from ``seed``, BN statistics calibrated on ``calib_images`` (B, 3, H, W)
    in [0, 1], in eval mode. A backbone with ``freeze_norm`` is frozen after
    calibration (``freeze_norm=True`` builds the same modules, uncalibrated).

    As in a trained ResNet, the last norm of every residual branch has small
    weights (x RESIDUAL_SCALE): a random deep ResNet without them amplifies
    float32 rounding chaotically (the r50 then differs from its own float64
    evaluation by 3e-4 in score, above the tolerances, fused or not)."""
    from mmdet.registry import MODELS

    from rtdetr_mm.models.layers.frozen_bn import freeze_batch_norms
    model_cfg = copy.deepcopy(model_cfg)
    frozen = model_cfg.backbone.get('freeze_norm', False)
    model_cfg.backbone.freeze_norm = False
    model = MODELS.build(model_cfg)
    redraw_like_trained_(model, seed)
    with torch.no_grad():
        for stage in model.backbone.res_layers:
            for block in stage.blocks:
                last = block.branch2c if hasattr(block, 'branch2c') else block.branch2b
                last.norm.weight.mul_(RESIDUAL_SCALE)
    calibrate_batch_norms_(model, calib_images)
    if frozen:
        freeze_batch_norms(model.backbone)
    return model.eval()


def build_small(name: str, seed: int = 0) -> nn.Module:
    """A small model of the ``name`` config with random weights calibrated
    on ``example_inputs(2, INPUT_SIZE, seed=7)``, in eval mode."""
    from rtdetr_mm.deployment.onnx_export import example_inputs
    return calibrated_model(small_model_cfg(name).model,
                            example_inputs(2, INPUT_SIZE, seed=7)[0], seed)


def detection_arrays(samples) -> Dict[str, np.ndarray]:
    """Predicted data samples (or mmdet's dumped result dicts, with
    ``pred_instances`` as a dict) -> ``labels`` (B, K), ``boxes`` (B, K, 4),
    ``scores`` (B, K) numpy arrays (``compare_detections``' input)."""
    def get(sample, key):
        pred = sample['pred_instances'] if isinstance(sample, dict) else sample.pred_instances
        value = pred[key] if isinstance(pred, dict) else getattr(pred, key)
        return value.numpy() if torch.is_tensor(value) else np.asarray(value)

    return dict(labels=np.stack([get(s, 'labels') for s in samples]),
                boxes=np.stack([get(s, 'bboxes').astype(np.float64) for s in samples]),
                scores=np.stack([get(s, 'scores').astype(np.float64) for s in samples]))


def assert_same_detections(ours: Dict[str, np.ndarray], ref: Dict[str, np.ndarray],
                           score_tol: float = SCORE_TOL, box_tol: float = BOX_TOL,
                           min_matched: int = 100) -> Dict[str, float]:
    """Same labels above the top-K cut-off, each detection matched (more
    than ``min_matched``), scores and boxes within the tolerances; returns
    ``compare_detections``' report."""
    from rtdetr_mm.deployment.onnx_export import compare_detections
    diffs = compare_detections(ours, ref)
    assert diffs['count_mismatches'] == 0 and diffs['matched'] > min_matched, diffs
    assert diffs['max_score_diff'] < score_tol and diffs['max_box_diff'] < box_tol, diffs
    return diffs


def load_images(paths: Sequence[str]) -> torch.Tensor:
    """Image files -> (B, 3, H, W) float32 RGB in [0, 1] (what the configs'
    data preprocessor, mean 0 / std 255 / bgr_to_rgb, makes of them)."""
    import cv2
    return torch.stack([torch.from_numpy(cv2.imread(p)[:, :, ::-1].copy()).permute(2, 0, 1)
                        for p in paths]).float() / 255.0
