"""Validation loss (issue 14.4): ``RTDETRv2ValLoop(compute_loss=True)``.

A tiny random-weight RT-DETRv2 (2 decoder layers, trained-like weight scales)
validates 6 generated images (one without objects) in batches of 4 and 2.

Reference: the head's training ``loss`` (``RTDETRv2.loss``: every decoder
layer, the encoder top-k) on the same batches and the same (EMA) weights,
with denoising off and the modules that train differently (BatchNorm,
dropout) in eval mode, averaged weighted by batch size. The loop's logged
``val/`` terms must equal it, its predictions and metrics those of the plain
val loop, and each batch must go through the model once.

A 2-iteration ``tools/train.py`` run with the documented switch
(``--cfg-options val_cfg.compute_loss=True``) and two validations (one
mid-epoch, ``val_interval=0.5``) must write ``val/loss`` next to
``coco/bbox_mAP`` in ``vis_data/scalars.json``, each validation's own value.
"""
import copy
import glob
import json
import os.path as osp

import pytest
import torch
import torch.nn as nn
from mmdet.registry import HOOKS, METRICS, RUNNERS
from mmengine.evaluator import BaseMetric
from mmengine.hooks import EMAHook, Hook
from mmengine.structures import InstanceData

from rtdetr_mm.engine.cli import load_config
from rtdetr_mm.models.backbones.presnet import PResNet
from rtdetr_mm.models.dense_heads.rtdetrv2_head import RTDETRv2Head
from rtdetr_mm.testing import ROOT
from rtdetr_mm.testing.model_utils import calibrate_batch_norms_, redraw_like_trained_
from rtdetr_mm.testing.tiny_coco import make_tiny_coco, tiny_config
from rtdetr_mm.testing.tools import load_tool

R18 = osp.join(ROOT, 'configs/rtdetrv2/rtdetrv2_r18vd_4xb4-120e_coco.py')
RTOL = 1e-5
#: the tiny model with 2 decoder layers (so there are d0. auxiliary terms)
TWO_LAYERS = "model['bbox_head']['num_layers'] = 2\n"


@METRICS.register_module(name='ValLossTestChecksum', force=True)
class _Checksum(BaseMetric):
    """Sums of the predicted scores, boxes and labels: any change in any
    prediction changes them (CocoMetric of a random model may not move)."""
    default_prefix = 'checksum'

    def process(self, data_batch, data_samples):
        for sample in data_samples:
            pred = sample['pred_instances']
            self.results.append([float(pred[k].double().sum())
                                 for k in ('scores', 'bboxes', 'labels')])

    def compute_metrics(self, results):
        return dict(zip(('scores', 'bboxes', 'labels'),
                        (sum(r[i] for r in results) for i in range(3))))


@HOOKS.register_module(name='ValLossTestRecorder', force=True)
class _Recorder(Hook):
    """Records each validation's metrics, in the train run."""
    metrics = []

    def after_val_epoch(self, runner, metrics=None):
        type(self).metrics.append(dict(metrics))


class _PerturbEMAAndRecord(Hook):
    """Makes the EMA weights differ from the training ones once (before the
    EMA hook swaps them in) and records the validation batches."""
    priority = 'HIGH'  # before EMAHook (NORMAL) swaps

    def __init__(self):
        self.batches, self.perturbed = [], False

    def before_val_epoch(self, runner):
        if not self.perturbed:
            ema = next(h for h in runner.hooks if isinstance(h, EMAHook))
            with torch.no_grad():
                for p in ema.ema_model.module.parameters():
                    p.mul_(1.02)
            self.perturbed = True

    def after_val_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.batches.append(data_batch)


def _count_forwards(counts):
    def hook(module, args, output):
        for cls in (PResNet, RTDETRv2Head):
            if isinstance(module, cls):
                counts[cls.__name__] = counts.get(cls.__name__, 0) + 1
    return torch.nn.modules.module.register_module_forward_hook(hook)


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    base = tmp_path_factory.mktemp('val_loss')
    # image 0 and 5 without objects; 6 images = val batches of 4 and 2
    return dict(base=base, data=make_tiny_coco(str(base / 'data'), num_images=6,
                                               size=(64, 64), empty_every=5))


@pytest.fixture(scope='module')
def validated(data):
    """One validation with compute_loss=True, then one plain, on the EMA
    weights, in-process."""
    torch.manual_seed(0)
    base, coco = data['base'], data['data']
    extra = TWO_LAYERS + (
        f"val_evaluator = [dict(type='CocoMetric', ann_file={coco['ann_file']!r}, "
        "metric='bbox'), dict(type='ValLossTestChecksum')]\n")
    config = tiny_config(str(base / 'cfg_runner.py'), R18, coco, size=(64, 64), max_epochs=1,
                         small_model=True, extra=extra)
    cfg = load_config(config, 'none', None, str(base / 'work_runner'))
    cfg.val_cfg = dict(type='RTDETRv2ValLoop', compute_loss=True)
    cfg.default_hooks.ema = dict(type='RTDETRv2EMAHook', warmup_steps=1)
    cfg.default_hooks.checkpoint = None  # its save_best needs runner.train()
    cfg.visualizer.name = 'test_val_loss_runner_visualizer'
    runner = RUNNERS.build(cfg)
    record = _PerturbEMAAndRecord()
    runner.register_hook(record)
    model = runner.model
    redraw_like_trained_(model, 0)
    calibrate_batch_norms_(model, torch.rand(4, 3, 64, 64, generator=torch.Generator()
                                             .manual_seed(1)))
    counts = {}
    handle = _count_forwards(counts)
    try:
        metrics = runner.val()
    finally:
        handle.remove()
    batches = list(record.batches)  # (the plain loop's are recorded too)
    plain = runner.build_val_loop(dict(type='RTDETRv2ValLoop', compute_loss=False)).run()
    ema = next(h for h in runner.hooks if isinstance(h, EMAHook))
    return dict(runner=runner, model=model, metrics=metrics, plain=plain, counts=counts,
                batches=batches, ema_state=copy.deepcopy(ema.ema_model.module.state_dict()))


def _reference_losses(model, state, batches):
    """The head's training ``loss`` on ``batches`` with ``state``'s weights,
    denoising off, BatchNorm / dropout in eval mode; terms and their sum
    averaged over the batches weighted by batch size."""
    reference = copy.deepcopy(model)
    reference.load_state_dict(state)
    reference.bbox_head.dn_cfg = dict(reference.bbox_head.dn_cfg, num_denoising=0)
    reference.train()
    for m in reference.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.Dropout, nn.MultiheadAttention)):
            m.eval()
    sums, count = {}, 0
    with torch.no_grad():
        for batch in batches:
            data = reference.data_preprocessor(batch, False)
            losses = reference.loss(data['inputs'], data['data_samples'])
            n = len(data['data_samples'])
            terms = {k: float(v) for k, v in losses.items()}
            terms['loss'] = sum(terms.values())
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + n * v
            count += n
    return {f'val/{k}': v / count for k, v in sums.items()}


def test_val_loss_equals_the_heads_training_loss(validated):
    metrics = validated['metrics']
    assert [len(b['data_samples']) for b in validated['batches']] == [4, 2]
    expected = _reference_losses(validated['model'], validated['ema_state'],
                                 validated['batches'])
    logged = {k: v for k, v in metrics.items() if k.startswith('val/')}
    # every term of the training loss but the denoising ones
    for key in ('val/loss', 'val/loss_cls', 'val/loss_bbox', 'val/loss_iou',
                'val/d0.loss_cls', 'val/d0.loss_bbox', 'val/d0.loss_iou',
                'val/enc_loss_cls', 'val/enc_loss_bbox', 'val/enc_loss_iou'):
        assert key in logged, (key, sorted(logged))
    assert not any('dn_' in k for k in logged), sorted(logged)
    assert sorted(logged) == sorted(expected)
    for key, value in expected.items():
        assert logged[key] == pytest.approx(value, rel=RTOL), (key, logged[key], value)
    assert logged['val/loss'] > 0.5  # a real loss, not a trivially equal 0
    # the loss keys come after the evaluator's (save_best='auto' takes the first)
    assert list(metrics)[0] == 'coco/bbox_mAP'


def test_val_loss_is_the_ema_models(validated):
    """The EMA hook swaps its weights in: the training weights give another loss."""
    training = _reference_losses(validated['model'], validated['model'].state_dict(),
                                 validated['batches'])
    assert training['val/loss'] != pytest.approx(validated['metrics']['val/loss'], rel=1e-3)


def test_metrics_equal_the_plain_val_loop(validated):
    metrics, plain = validated['metrics'], validated['plain']
    assert not any(k.startswith('val/') for k in plain)
    assert plain == {k: v for k, v in metrics.items() if not k.startswith('val/')}
    assert plain['checksum/scores'] > 0


def test_one_forward_per_batch(validated):
    # 2 batches: the backbone and the head ran twice (the fused copy's count too)
    assert validated['counts'] == {'PResNet': 2, 'RTDETRv2Head': 2}


@pytest.mark.parametrize('eval_idx', [-1, 0])
def test_predictions_equal_val_step(validated, eval_idx):
    """The detector's val_loss_and_predict predicts exactly what val_step
    does, also when an earlier decoder layer predicts (eval_idx=0)."""
    model = copy.deepcopy(validated['model']).eval()
    model.bbox_head.decoder.eval_idx = eval_idx % 2
    batch = validated['batches'][0]
    with torch.no_grad():
        expected = model.val_step(copy.deepcopy(batch))
        losses, predicted = model.val_loss_and_predict(copy.deepcopy(batch))
    assert 'loss_cls' in losses and 'd0.loss_cls' in losses
    assert len(predicted) == len(expected) == 4
    for got, want in zip(predicted, expected):
        for key in ('bboxes', 'scores', 'labels'):
            assert torch.equal(got.pred_instances[key], want.pred_instances[key]), key


def test_missing_ground_truth_names_the_image(validated):
    batch = copy.deepcopy(validated['batches'][0])
    batch['data_samples'][1].gt_instances = InstanceData()
    with pytest.raises(ValueError, match=r'0001\.png.*LoadAnnotations'):
        with torch.no_grad():
            validated['model'].val_loss_and_predict(batch)


def test_compute_loss_must_be_a_bool(validated):
    with pytest.raises(ValueError, match='val_cfg.compute_loss must be True or False'):
        validated['runner'].build_val_loop(dict(type='RTDETRv2ValLoop', compute_loss='yes'))


def test_train_run_logs_val_loss_next_to_map(data):
    """tools/train.py, 2 iterations, validations after iteration 1 (mid-epoch)
    and 2, with the documented switch: scalars.json has val/loss next to
    coco/bbox_mAP, each validation's own value (not averaged with the
    previous one), and save_best on coco/bbox_mAP still saves."""
    base, coco = data['base'], data['data']
    extra = TWO_LAYERS + ("custom_hooks = [dict(type='ValLossTestRecorder')]\n"
                          "visualizer = dict(name='test_val_loss_train_visualizer')\n")
    config = tiny_config(str(base / 'cfg_train.py'), R18, coco, size=(64, 64), max_epochs=1,
                         batch_size=4, small_model=True, extra=extra)
    work_dir = str(base / 'work_train')
    _Recorder.metrics = []
    argv = [config, '--work-dir', work_dir, '--cfg-options', 'val_cfg.compute_loss=True',
            'train_cfg.val_interval=0.5']
    assert load_tool('train').main(argv) == 0
    recorded = _Recorder.metrics
    assert len(recorded) == 2
    assert recorded[0]['val/loss'] != recorded[1]['val/loss']  # the weights moved
    scalars = glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))
    assert len(scalars) == 1, scalars
    with open(scalars[0]) as f:
        lines = [json.loads(line) for line in f]
    val_lines = [line for line in lines if 'coco/bbox_mAP' in line]
    assert len(val_lines) == 2
    for line, metrics in zip(val_lines, recorded):
        assert not any(k.startswith('val/val/') for k in line), sorted(line)
        for key in ('val/loss', 'val/loss_cls', 'val/d0.loss_bbox', 'val/enc_loss_iou'):
            assert line[key] == pytest.approx(metrics[key], rel=1e-9, abs=0), key
    train_lines = [line for line in lines if 'lr' in line]
    assert train_lines and not any(k.startswith('val/') for line in train_lines for k in line)
    assert glob.glob(osp.join(work_dir, 'best_coco_bbox_mAP_*.pth'))
