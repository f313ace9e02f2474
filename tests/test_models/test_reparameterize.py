"""Folding for inference (rtdetr_mm/models/layers/reparameterize.py) and the
detector's cached fused copy (RTDETRv2 ``reparameterize``): the fused model
predicts what the unfused one does, inference never changes the training
weights, and the copy follows the weights (load_state_dict, .to(), .data
swaps, eval() after the EMA hook's in-place swap).

Models: the r18vd and r50vd configs with the real backbones (vd shortcuts;
trainable BN in r18, frozen BN in the r50 backbone next to the trainable BN
of the neck and head) and a 64-channel encoder / decoder, at 96 x 128 with
random weights whose BN statistics are calibrated on the test images."""
import copy

import pytest
import torch
import torch.nn as nn
from mmdet.structures import DetDataSample

import rtdetr_mm  # noqa: F401
from rtdetr_mm.deployment.onnx_export import compare_detections, example_inputs
from rtdetr_mm.models.layers.conv_norm import ConvNormLayer
from rtdetr_mm.models.layers.csp_rep_layer import RepVggBlock
from rtdetr_mm.models.layers.frozen_bn import FrozenBatchNorm2d
from rtdetr_mm.models.layers.reparameterize import reparameterized_copy
from rtdetr_mm.testing.fused_models import (BOX_TOL, CONFIGS, INPUT_SIZE, SCORE_TOL,
                                            assert_same_detections, detection_arrays)
from rtdetr_mm.testing.fused_models import build_small as _build
from rtdetr_mm.testing.model_utils import calibrate_batch_norms_, redraw_like_trained_

NORMS = (nn.BatchNorm2d, nn.SyncBatchNorm, FrozenBatchNorm2d)

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope='module')
def models():
    return {name: _build(name) for name in CONFIGS}


def _samples(batch: int):
    return [DetDataSample(metainfo=dict(img_shape=INPUT_SIZE, batch_input_shape=INPUT_SIZE,
                                        ori_shape=INPUT_SIZE, scale_factor=(1.0, 1.0)))
            for _ in range(batch)]


def _images(dtype=torch.float32):
    return example_inputs(2, INPUT_SIZE, seed=1)[0].to(dtype)


@torch.no_grad()
def _predict(model, reparameterize=None, dtype=torch.float32):
    """Top-K detections of ``model.predict`` as compare_detections' arrays;
    ``reparameterize`` overrides the model's setting for this call."""
    saved = getattr(model, 'reparameterize', None)
    if reparameterize is not None:
        model.reparameterize = reparameterize
    try:
        results = model.predict(_images(dtype), _samples(2), rescale=False)
    finally:
        if reparameterize is not None:
            model.reparameterize = saved
    return _arrays(results)


_arrays = detection_arrays


def _assert_same(ours, ref, score_tol=SCORE_TOL, box_tol=BOX_TOL):
    # same labels above the top-K cut-off, each detection matched
    assert_same_detections(ours, ref, score_tol, box_tol, min_matched=100)


def _assert_differ(ours, ref):
    diffs = compare_detections(ours, ref)
    assert diffs['max_score_diff'] > SCORE_TOL or diffs['max_box_diff'] > BOX_TOL, diffs


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_bit_identical(model, state):
    now = model.state_dict()
    assert list(now) == list(state)
    assert all(torch.equal(now[k], v) for k, v in state.items())


@pytest.mark.parametrize('name', list(CONFIGS))
def test_fused_copy_equals_unfused_model(models, name):
    model = models[name]
    before = _state(model)
    kinds = {type(m) for m in model.modules()}
    # the structure under test: vd shortcuts; trainable BN (r18 backbone,
    # every neck / head), frozen BN (r50 backbone); RepVGG blocks
    assert all(isinstance(stage.blocks[0].short.pool, nn.AvgPool2d)
               for stage in model.backbone.res_layers[1:])
    assert nn.BatchNorm2d in kinds and RepVggBlock in kinds
    assert (FrozenBatchNorm2d in kinds) == (name == 'r50vd')
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.backbone.modules()) == (name == 'r18vd')

    fused = reparameterized_copy(model)
    assert not any(isinstance(m, NORMS) for m in fused.modules())
    layers = [m for m in fused.modules() if isinstance(m, ConvNormLayer)]
    assert layers and all(isinstance(m.norm, nn.Identity) and m.conv.bias is not None
                          for m in layers)
    blocks = [m for m in fused.modules() if isinstance(m, RepVggBlock)]
    assert blocks and all(hasattr(m, 'conv') and not hasattr(m, 'conv1')
                          and not hasattr(m, 'conv2') for m in blocks)
    assert fused.reparameterize is False and not fused.training
    assert not any(p.requires_grad for p in fused.parameters())
    _assert_bit_identical(model, before)  # the copy was folded, not the model
    assert all(hasattr(m, 'conv1') for m in model.modules() if isinstance(m, RepVggBlock))

    reference = _predict(model, reparameterize=False)
    _assert_same(_predict(fused), reference)
    # in float64 the fold is exact: the float32 tolerances are rounding only
    model64 = copy.deepcopy(model).double()
    _assert_same(_predict(reparameterized_copy(model64), dtype=torch.float64),
                 _predict(model64, reparameterize=False, dtype=torch.float64),
                 score_tol=1e-6, box_tol=1e-4)
    # switch_to_deploy folds in place through the same path
    deployed = copy.deepcopy(model)
    deployed.switch_to_deploy()
    assert not any(isinstance(m, NORMS) for m in deployed.modules())
    assert deployed.reparameterize is False
    _assert_same(_predict(deployed), reference)


def test_predict_runs_the_cached_fused_copy(models):
    model = models['r18vd']
    assert model.reparameterize is True  # the config default
    fused = model.inference_model()
    assert fused is not model and fused is model.inference_model()  # cached
    assert not any(isinstance(m, NORMS) for m in fused.modules())
    _assert_same(_predict(model), _predict(model, reparameterize=False))
    assert model.inference_model() is fused
    # the fused copy is no submodule: not in modules(), parameters(), state_dict
    assert all(m is not fused for m in model.modules())
    assert not any(k.startswith('_inference') for k in model.state_dict())
    model.train()
    assert model.inference_model() is model  # training runs the detector itself
    model.eval()


def test_copy_built_under_inference_mode_serves_autograd(models):
    """A copy first built under torch.inference_mode (benchmarks, user code)
    holds normal tensors: a later predict with an input that requires grad
    (saliency maps) still backpropagates to the input."""
    model = models['r18vd']
    model.invalidate_inference_copy()
    with torch.inference_mode():
        model.predict(_images(), _samples(2), rescale=False)
    images = _images().requires_grad_(True)
    model.predict(images, _samples(2), rescale=False)[0].pred_instances.scores.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_training_weights_unchanged_and_copy_follows_the_weights():
    model = _build('r18vd')
    before = _state(model)
    num_params = len(list(model.parameters()))
    first = _predict(model)
    _assert_bit_identical(model, before)
    assert len(list(model.parameters())) == num_params
    fused = model.inference_model()

    # deepcopy (EMA models, reparameterized_copy) does not carry the cache
    assert copy.deepcopy(model)._inference_copy_cache.model is None
    assert model._inference_copy_cache.model is fused

    # load_state_dict with other weights (copied in place): rebuilt
    other = _build('r18vd', seed=1)
    model.load_state_dict(other.state_dict())
    assert model.inference_model() is not fused
    loaded = _predict(model)
    _assert_differ(loaded, first)
    _assert_same(loaded, _predict(other, reparameterize=False))

    # the EMA hook swaps weights in place, then ValLoop calls eval()
    fused = model.inference_model()
    with torch.no_grad():
        for p, q in zip(model.parameters(), _build('r18vd', seed=0).parameters()):
            p.data.copy_(q.data)
    # documented limitation: an in-place edit in eval mode is not seen ...
    assert model.inference_model() is fused
    model.eval()  # ... until eval() / train() / invalidate_inference_copy()
    assert model.inference_model() is not fused
    _assert_same(_predict(model), _predict(model, reparameterize=False))
    fused = model.inference_model()
    model.invalidate_inference_copy()
    assert model.inference_model() is not fused

    # a .data swap: new tensors, new fingerprint
    fused = model.inference_model()
    with torch.no_grad():
        for p in model.neck.parameters():
            p.data = p.data * 0.9
    swapped = _predict(model)
    assert model.inference_model() is not fused
    _assert_differ(swapped, first)
    _assert_same(swapped, _predict(model, reparameterize=False))

    # .to(float64): rebuilt in the new dtype
    model.to(torch.float64)
    assert all(p.dtype == torch.float64 for p in model.inference_model().parameters())
    _assert_same(_predict(model, dtype=torch.float64),
                 _predict(model, reparameterize=False, dtype=torch.float64))


def test_validation_runs_the_ema_weights_and_leaves_training_weights_bit_identical(tmp_path):
    """mmengine's runner.val() with the EMA hook: the EMA weights are
    swapped into the detector in place (same tensors), ValLoop calls
    eval() and predicts with a fused copy OF THE EMA WEIGHTS (a copy cached
    from the training weights before validation is dropped), and afterwards
    the training weights are bit-identical to those before."""
    from mmdet.registry import RUNNERS
    from mmengine.hooks import EMAHook, Hook

    from rtdetr_mm.engine.cli import load_config
    from rtdetr_mm.testing.tiny_coco import make_tiny_coco, tiny_config

    class _Record(Hook):
        """Makes the EMA weights differ from the training ones (before the
        EMA hook swaps them in) and records the validation batches and
        predictions."""
        batches, outputs = [], []

        def before_val_epoch(self, runner):
            ema = next(h for h in runner.hooks if isinstance(h, EMAHook))
            with torch.no_grad():
                for p in ema.ema_model.module.parameters():
                    p.mul_(1.02)

        def after_val_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            self.batches.append(data_batch)
            self.outputs.extend(outputs)

    data = make_tiny_coco(str(tmp_path / 'data'), num_images=4, size=(64, 64))
    config = tiny_config(str(tmp_path / 'cfg.py'), CONFIGS['r18vd'], data, size=(64, 64),
                         max_epochs=1, small_model=True)
    cfg = load_config(config, 'none', None, str(tmp_path / 'work'))
    cfg.default_hooks.ema = dict(type='RTDETRv2EMAHook', warmup_steps=1)
    cfg.default_hooks.visualization = dict(type='DetVisualizationHook', draw=False)
    cfg.default_hooks.checkpoint = None  # its save_best needs runner.train()
    runner = RUNNERS.build(cfg)
    record = _Record()
    runner.register_hook(record, priority='HIGH')  # before the EMA hook's swap
    model = runner.model
    assert model.reparameterize is True
    redraw_like_trained_(model, 0)
    calibrate_batch_norms_(model, example_inputs(2, (64, 64), seed=7)[0])
    with torch.no_grad():
        model._forward(torch.rand(1, 3, 64, 64))
    stale = model.inference_model()  # a fused copy of the training weights
    before = _state(model)

    runner.val()
    _assert_bit_identical(model, before)
    assert model.inference_model() is not stale
    ema = next(h for h in runner.hooks if isinstance(h, EMAHook))

    def outputs_of(weights):
        reference = copy.deepcopy(model)
        reference.load_state_dict(weights)
        reference.reparameterize = False
        reference.eval()
        with torch.no_grad():
            return _arrays([out for batch in record.batches for out in reference.val_step(batch)])

    validated = _arrays(record.outputs)
    assert validated['scores'].shape == (4, 40)
    diffs = compare_detections(validated, outputs_of(ema.ema_model.module.state_dict()))
    assert diffs['count_mismatches'] == 0 and diffs['matched'] > 100, diffs
    assert diffs['max_score_diff'] < SCORE_TOL and diffs['max_box_diff'] < BOX_TOL, diffs
    _assert_differ(validated, outputs_of(before))  # the training weights predict otherwise


def test_channels_last_changes_the_layout_not_the_values(models):
    """The fused copy runs NHWC (conv weights and images), with the values
    of the NCHW copy; the training detector stays NCHW."""
    model = models['r18vd']
    assert model.channels_last is True  # the config default
    fused = model.inference_model()
    convs = [m.weight for m in fused.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert all(m.weight.is_contiguous() for m in model.modules() if isinstance(m, nn.Conv2d))
    layouts = []
    hook = fused.backbone.register_forward_pre_hook(
        lambda _, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    try:
        nhwc = _predict(model)
    finally:
        hook.remove()
    assert layouts == [True]
    model.channels_last = False
    model.invalidate_inference_copy()
    try:
        _assert_same(nhwc, _predict(model))
    finally:
        model.channels_last = True
        model.invalidate_inference_copy()


def test_building_the_inference_copy_draws_no_random_numbers(models):
    """Validation builds the copy; it must not move torch's global generator,
    or training randomness (and exact resume) would depend on validation."""
    model = models['r18vd']
    model.invalidate_inference_copy()
    before = torch.get_rng_state()
    model.inference_model()
    assert torch.equal(torch.get_rng_state(), before)
