"""Issue 3: every run-level knob of the seed script is a config key that acts
in what the runner builds or runs.

Seed knob -> key (see README "Fine-tuning knobs"):
TRAIN_BATCH train_dataloader.batch_size, VAL_BATCH val_dataloader.batch_size and
test_dataloader.batch_size,
GRAD_ACCUM optim_wrapper.accumulative_counts, EPOCHS train_cfg.max_epochs,
LEARNING_RATE optim_wrapper.optimizer.lr, WEIGHT_DECAY
optim_wrapper.optimizer.weight_decay, WARMUP_RATIO param_scheduler.0.warmup_ratio,
USE_BF16/USE_FP16 optim_wrapper.type/dtype, IMAGE_SIZE image_size,
EVAL_RATE_EPOCHS train_cfg.val_interval.

Runners are built in-process from real child configs (rtdetr_mm/testing/tiny_coco.py) and
``--cfg-options``-style dicts merged with ``Config.merge_from_dict``, exactly
as tools/train.py does.
"""
import glob
import math
import os.path as osp

import pytest
import torch
from mmdet.registry import HOOKS, METRICS
from mmdet.structures.bbox import get_box_tensor
from mmengine.config import Config
from mmengine.evaluator import BaseMetric
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import RUNNERS

import rtdetr_mm  # noqa: F401
from rtdetr_mm.engine.cli import load_config
from rtdetr_mm.testing.tiny_coco import make_tiny_coco, tiny_config

from rtdetr_mm.testing import ROOT
R18 = osp.join(ROOT, 'configs/rtdetrv2/rtdetrv2_r18vd_4xb4-120e_coco.py')
R50 = osp.join(ROOT, 'configs/rtdetrv2/rtdetrv2_r50vd_4xb4-72e_coco.py')

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return make_tiny_coco(str(tmp_path_factory.mktemp('knobs')), num_images=8, size=(64, 64))


def _runner(tmp_path, data, options=None, extra='', size=(64, 64), max_epochs=1, batch_size=2,
            base=R18):
    config = tiny_config(str(tmp_path / 'cfg.py'), base, data, size=size,
                         max_epochs=max_epochs, batch_size=batch_size, small_model=True,
                         extra=extra)
    cfg = load_config(config, 'none', options, str(tmp_path / 'work'))
    cfg.randomness = dict(seed=0)
    cfg.default_hooks.visualization = dict(type='DetVisualizationHook', draw=False)
    return RUNNERS.build(cfg)


def _build_training_parts(runner):
    """What ``Runner.train`` builds before the first iteration."""
    runner._train_loop = runner.build_train_loop(runner._train_loop)
    runner.optim_wrapper = runner.build_optim_wrapper(runner.optim_wrapper)
    runner.param_schedulers = runner.build_param_scheduler(runner.param_schedulers)


@HOOKS.register_module(force=True)
class _RecordHook(Hook):
    """Records, per iteration, the input shape, a weight and the EMA weight,
    the batch-resize / pipeline state, and the iterations of validations.

    What the model itself receives is recorded with torch hooks on the data
    preprocessor (``register_forward_pre_hook`` / ``register_forward_hook``):
    the GT boxes of the pipeline going in, the batch shape and GT boxes
    coming out (after batch augments such as ``RTDETRv2BatchResize``)."""
    priority = 'LOWEST'
    records = []

    def before_train(self, runner):
        type(self).records = []
        self._preprocessed = []
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model

        def before_preprocess(module, args, kwargs):
            data = args[0] if args else kwargs['data']
            training = args[1] if len(args) > 1 else kwargs.get('training', False)
            if training:
                self._preprocessed.append(dict(
                    pipeline_shape=tuple(data['inputs'][0].shape),
                    pipeline_boxes=[get_box_tensor(ds.gt_instances.bboxes).clone()
                                    for ds in data['data_samples']]))

        def after_preprocess(module, args, kwargs, output):
            training = args[1] if len(args) > 1 else kwargs.get('training', False)
            if training:
                self._preprocessed[-1].update(
                    model_input_shape=tuple(output['inputs'].shape),
                    model_boxes=[get_box_tensor(ds.gt_instances.bboxes).clone()
                                 for ds in output['data_samples']])

        self._handles = [
            model.data_preprocessor.register_forward_pre_hook(before_preprocess,
                                                              with_kwargs=True),
            model.data_preprocessor.register_forward_hook(after_preprocess, with_kwargs=True)]

    def after_train(self, runner):
        for handle in self._handles:
            handle.remove()

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        model = runner.model
        ema = next((h for h in runner.hooks if type(h).__name__ == 'RTDETRv2EMAHook'), None)
        weight = model.bbox_head.enc_score_head.weight
        pipeline = runner.train_dataloader.dataset.pipeline
        preprocessed = self._preprocessed.pop() if self._preprocessed else {}
        assert not self._preprocessed  # one preprocessor call per iteration
        self.records.append(dict(
            preprocessed,
            kind='train', iter=runner.iter, epoch=runner.epoch,
            input_shape=tuple(data_batch['inputs'][0].shape),
            weight=weight.detach().clone(),
            ema=None if ema is None else
            ema.ema_model.module.bbox_head.enc_score_head.weight.detach().clone(),
            resize_on=[getattr(a, 'enabled', None) for a in
                       (model.data_preprocessor.batch_augments or [])],
            transforms=[type(t).__name__ for t in pipeline.transforms]))

    def after_val_epoch(self, runner, metrics=None):
        self.records.append(dict(kind='val', done=runner.iter,
                                 mid=runner.train_loop.in_mid_epoch_validation,
                                 metrics=dict(metrics or {})))


# ----------------------------------------------------------- batch sizes
def test_train_and_val_batch_sizes(tmp_path, data):
    """TRAIN_BATCH and VAL_BATCH (both keys the README names for it:
    val_dataloader and test_dataloader), each set to its own value and read
    back from the dataloaders the runner builds."""
    runner = _runner(tmp_path, data, {'train_dataloader.batch_size': 3,
                                      'val_dataloader.batch_size': 5,
                                      'test_dataloader.batch_size': 7})
    assert runner.train_dataloader.batch_size == 3
    assert runner.val_dataloader.batch_size == 5
    assert runner.test_dataloader.batch_size == 7
    assert len(runner.train_dataloader) == math.ceil(8 / 3)
    assert len(runner.val_dataloader) == math.ceil(8 / 5)
    assert len(runner.test_dataloader) == math.ceil(8 / 7)
    assert [len(batch['inputs']) for batch in runner.test_dataloader] == [7, 1]


# ----------------------------------------------- lr, weight decay, groups
def test_lr_weight_decay_and_parameter_groups(tmp_path, data):
    """LEARNING_RATE / WEIGHT_DECAY move every group, the backbone keeps its
    x0.1 multiplier, norms keep zero decay, and the re-initialised encoder
    score head and the denoising embedding are NOT in the backbone group
    (the seed script's optimizer put them there)."""
    runner = _runner(tmp_path, data, {'optim_wrapper.optimizer.lr': 3e-4,
                                      'optim_wrapper.optimizer.weight_decay': 0.05}, base=R50)
    optim = runner.build_optim_wrapper(runner.optim_wrapper).optimizer
    names = {id(p): n for n, p in runner.model.named_parameters()}
    lr_of, wd_of = {}, {}
    for group in optim.param_groups:
        for p in group['params']:
            lr_of[names[id(p)]] = group['lr']
            wd_of[names[id(p)]] = group['weight_decay']
    trainable = [n for n, p in runner.model.named_parameters() if p.requires_grad]
    assert set(lr_of) == set(trainable)
    for name in trainable:
        in_backbone_group = name.startswith('backbone.') and 'norm' not in name
        assert lr_of[name] == pytest.approx(3e-5 if in_backbone_group else 3e-4), name
    for name in ('bbox_head.enc_score_head.weight', 'bbox_head.denoising_class_embed.weight',
                 'bbox_head.enc_bbox_head.layers.0.weight'):
        assert lr_of[name] == pytest.approx(3e-4), name
        assert wd_of[name] == pytest.approx(0.05), name
    norms = [n for n in trainable if n.startswith(('neck.', 'bbox_head.'))
             and ('norm' in n or '.bn.' in n)]
    assert norms and all(wd_of[n] == 0 for n in norms)


FT18 = osp.join(ROOT, 'configs/rtdetrv2_finetune/rtdetrv2_r18vd_1xb8-36e_custom.py')
FT50 = osp.join(ROOT, 'configs/rtdetrv2_finetune/rtdetrv2_r50vd_1xb8-36e_custom.py')


@pytest.mark.parametrize('base', [FT18, FT50], ids=['r18', 'r50'])
def test_finetune_configs_backbone_group_holds_only_backbone(tmp_path, data, base):
    """The fine-tuning starting configs: every backbone parameter (norms
    included) at lr x 0.1 = 1e-5, everything else (encoder score head and
    denoising embedding included) at 1e-4; norms without weight decay."""
    cfg = Config.fromfile(base)
    assert cfg.optim_wrapper.optimizer.lr == 1e-4 and cfg.optim_wrapper.clip_grad.max_norm == 0.1
    assert cfg.model.bbox_head.num_classes == len(cfg.classes)
    runner = _runner(tmp_path, data, base=base)
    optim = runner.build_optim_wrapper(runner.optim_wrapper).optimizer
    names = {id(p): n for n, p in runner.model.named_parameters()}
    lr_of, wd_of = {}, {}
    for group in optim.param_groups:
        for p in group['params']:
            lr_of[names[id(p)]], wd_of[names[id(p)]] = group['lr'], group['weight_decay']
    trainable = [n for n, p in runner.model.named_parameters() if p.requires_grad]
    assert set(lr_of) == set(trainable)
    lr, wd = runner.cfg.optim_wrapper.optimizer.lr, runner.cfg.optim_wrapper.optimizer.weight_decay
    for name in trainable:
        assert lr_of[name] == pytest.approx(lr * (0.1 if name.startswith('backbone.') else 1)), name
        is_norm = 'norm' in name or '.bn.' in name
        assert wd_of[name] == pytest.approx(0.0 if is_norm else wd), name
    assert lr_of['bbox_head.enc_score_head.weight'] == pytest.approx(lr)
    assert lr_of['bbox_head.denoising_class_embed.weight'] == pytest.approx(lr)


# --------------------------------------------------------------- warm-up
@pytest.mark.parametrize('ratio,accum', [(0.25, 1), (0.3, 2), (None, 1)])
def test_warmup_ratio_counts_real_optimizer_steps(tmp_path, data, ratio, accum):
    """WARMUP_RATIO: W = round(ratio * optimizer steps of the whole run), from
    dataset length, batch size, accumulation and epochs; unset: 2000."""
    epochs, batch = 6, 3
    options = {'param_scheduler.0.warmup_ratio': ratio, 'param_scheduler.0.warmup_steps': 2000,
               'optim_wrapper.accumulative_counts': accum, 'train_cfg.max_epochs': epochs,
               'train_dataloader.batch_size': batch}
    runner = _runner(tmp_path, data, options)
    _build_training_parts(runner)
    scheduler = runner.param_schedulers[0]
    iters_per_epoch = math.ceil(8 / batch)  # 8 images, drop_last False in the tiny config
    steps = epochs * iters_per_epoch // accum
    expected_w = max(1, round(ratio * steps)) if ratio else 2000
    assert scheduler.warmup_steps == expected_w
    assert scheduler.end == expected_w * accum  # in iterations
    # the lr actually applied: base * (t + 1) / W at optimizer step t (accum 1)
    if accum == 1 and ratio:
        group = runner.optim_wrapper.optimizer.param_groups[0]
        base = group['initial_lr'] if 'initial_lr' in group else None
        lrs = []
        for _ in range(expected_w + 2):
            lrs.append(group['lr'])
            scheduler.step()
        base = base or lrs[-1]
        expected = [base * min(1.0, (t + 1) / expected_w) for t in range(expected_w + 2)]
        assert lrs == pytest.approx(expected, rel=1e-6)


# ------------------------------------------------------ grad accumulation
def test_grad_accumulation_steps_weights_and_ema_every_n(tmp_path, data):
    """GRAD_ACCUM=2: weights (and the EMA) change at iterations 2, 4 only."""
    extra = "custom_hooks = [dict(type='RTDETRv2EMAHook', warmup_steps=3), dict(type='_RecordHook')]"
    runner = _runner(tmp_path, data, {'optim_wrapper.accumulative_counts': 2,
                                      'train_dataloader.batch_size': 2,
                                      'train_cfg.val_interval': 100}, extra=extra)
    before = runner.model.bbox_head.enc_score_head.weight.detach().clone()
    runner.train()
    rec = [r for r in _RecordHook.records if r['kind'] == 'train']
    assert len(rec) == 4
    weights = [before] + [r['weight'] for r in rec]
    changed = [not torch.equal(weights[i], weights[i + 1]) for i in range(4)]
    assert changed == [False, True, False, True]
    emas = [before] + [r['ema'] for r in rec]  # the EMA starts as a copy of the model
    ema_changed = [not torch.equal(emas[i], emas[i + 1]) for i in range(4)]
    assert ema_changed == [False, True, False, True]
    ema_hook = next(h for h in runner.hooks if type(h).__name__ == 'RTDETRv2EMAHook')
    assert ema_hook.ema_model.steps.item() == 2  # one update per optimizer step


def test_ema_warmup_follows_lr_warmup(tmp_path, data):
    runner = _runner(tmp_path, data, {'param_scheduler.0.warmup_ratio': 0.5,
                                      'train_cfg.max_epochs': 4},
                     extra="custom_hooks = [dict(type='RTDETRv2EMAHook')]")
    _build_training_parts(runner)
    hook = next(h for h in runner.hooks if type(h).__name__ == 'RTDETRv2EMAHook')
    hook.before_run(runner)
    w = runner.param_schedulers[0].warmup_steps
    assert w == round(0.5 * 4 * 4) == 8
    assert hook.ema_model.gamma == w


# ------------------------------------------- epochs and epoch-relative points
def test_epochs_move_aug_switch_and_multiscale_end(tmp_path, data):
    """EPOCHS=3 with 'stop 1 epoch before the end': epochs 1-2 train with the
    strong pipeline and multi-scale, epoch 3 without (counted from the end)."""
    extra = '''
model['data_preprocessor'] = dict(batch_augments=[
    dict(type='RTDETRv2BatchResize', scale_ratios=[1.0, 1.5])])
custom_hooks = [
    dict(type='RTDETRv2AugSwitchHook', stop_epochs_before_end=1,
         switch_pipeline=[t for t in train_pipeline if t['type'] != 'RandomFlip']),
    dict(type='_RecordHook')]
'''
    runner = _runner(tmp_path, data, {'train_cfg.max_epochs': 3, 'train_dataloader.batch_size': 4,
                                      'train_cfg.val_interval': 100}, extra=extra)
    runner.train()
    rec = [r for r in _RecordHook.records if r['kind'] == 'train']
    by_epoch = {r['epoch']: r for r in rec}
    assert sorted(by_epoch) == [0, 1, 2]
    assert by_epoch[0]['resize_on'] == by_epoch[1]['resize_on'] == [True]
    assert by_epoch[2]['resize_on'] == [False]
    assert 'RandomFlip' in by_epoch[1]['transforms']
    assert 'RandomFlip' not in by_epoch[2]['transforms']
    # multi-scale actually resized what the model receives (after the data
    # preprocessor): both 64 and 96 before the switch (one size drawn per
    # batch with the runner-seeded Python `random`), only 64 after
    assert all(r['input_shape'][-2:] == (64, 64) for r in rec)  # the pipeline's size
    assert {r['model_input_shape'][-2:] for r in rec if r['epoch'] < 2} == {(64, 64), (96, 96)}
    assert {r['model_input_shape'][-2:] for r in rec if r['epoch'] == 2} == {(64, 64)}
    # ... and the GT boxes were scaled with the image
    for r in rec:
        (in_h, in_w), (out_h, out_w) = r['pipeline_shape'][-2:], r['model_input_shape'][-2:]
        scale = torch.tensor([out_w / in_w, out_h / in_h] * 2)
        assert len(r['model_boxes']) == len(r['pipeline_boxes']) == 4
        for before, after in zip(r['pipeline_boxes'], r['model_boxes']):
            assert len(before) > 0
            torch.testing.assert_close(after, before * scale, rtol=1e-6, atol=1e-4)


# ------------------------------------------------------------- image size
def test_image_size_reaches_the_model_from_child_config_and_cfg_options(tmp_path, data):
    extra = "custom_hooks = [dict(type='_RecordHook')]"
    runner = _runner(tmp_path, data, {'image_size': (96, 128), 'train_cfg.val_interval': 100,
                                      'train_dataloader.batch_size': 4}, extra=extra)
    runner.train()
    shapes = {r['input_shape'] for r in _RecordHook.records if r['kind'] == 'train'}
    assert shapes == {(3, 96, 128)}  # (C, H, W) of what the data pipeline delivers
    # the child-config value (64, 64) was replaced everywhere, val and test included
    for loader in ('val_dataloader', 'test_dataloader'):
        assert runner.cfg[loader].dataset.pipeline[1].scale == (128, 96), loader
    for loader in (runner.val_dataloader, runner.test_dataloader):
        sample = loader.dataset[0]
        assert tuple(sample['inputs'].shape[-2:]) == (96, 128)


def test_image_size_255_is_refused_with_the_key(tmp_path, data):
    with pytest.raises(ValueError, match=r'image_size=\(255, 255\).*multiple of 32.*224 or 256'):
        _runner(tmp_path, data, {'image_size': (255, 255)})


# ----------------------------------------------------------- precision
def test_bf16_autocast_on_cpu_and_fp16_resolution(tmp_path, data):
    runner = _runner(tmp_path, data, {'optim_wrapper.type': 'RTDETRv2AmpOptimWrapper',
                                      'optim_wrapper.dtype': 'bfloat16'})
    wrapper = runner.build_optim_wrapper(runner.optim_wrapper)
    with wrapper.optim_context(runner.model):
        assert torch.is_autocast_enabled('cpu')
        assert torch.get_autocast_dtype('cpu') == torch.bfloat16
        out = torch.nn.functional.linear(torch.rand(2, 4), torch.rand(3, 4))
        assert out.dtype == torch.bfloat16
    assert wrapper.loss_scaler is None
    runner = _runner(tmp_path, data, {'optim_wrapper.type': 'RTDETRv2AmpOptimWrapper',
                                      'optim_wrapper.dtype': 'float16'})
    wrapper = runner.build_optim_wrapper(runner.optim_wrapper)
    assert wrapper.cast_dtype == torch.float16
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="dtype='float16' needs a CUDA device"):
            with wrapper.optim_context(runner.model):
                pass


# -------------------------------------------------------- evaluation rate
_SCRIPTED = [0.10, 0.30, 0.50, 0.20]  # bbox_mAP of the 4 validations


@METRICS.register_module(force=True)
class _ScriptedMetric(BaseMetric):
    """Returns the next value of _SCRIPTED as coco/bbox_mAP."""
    default_prefix = 'coco'
    calls = 0

    def process(self, data_batch, data_samples):
        self.results.append(0)

    def compute_metrics(self, results):
        value = _SCRIPTED[type(self).calls % len(_SCRIPTED)]
        type(self).calls += 1
        return dict(bbox_mAP=value)


def test_eval_rate_half_epoch_validates_twice_per_epoch_and_keeps_best(tmp_path, data):
    """EVAL_RATE_EPOCHS=0.5 with 4 iterations per epoch, 2 epochs: validation
    after iterations 2, 4, 6, 8; the best (0.50 at iteration 6, mid-epoch)
    is the only best checkpoint kept, and it holds the weights of iteration 6."""
    _ScriptedMetric.calls = 0
    extra = '''
custom_hooks = [dict(type='_RecordHook')]
val_evaluator = dict(_delete_=True, type='_ScriptedMetric')
test_evaluator = val_evaluator
'''
    runner = _runner(tmp_path, data, {'train_cfg.val_interval': 0.5, 'train_cfg.max_epochs': 2,
                                      'train_dataloader.batch_size': 2,
                                      'default_hooks.checkpoint.max_keep_ckpts': 1}, extra=extra)
    runner.train()
    vals = [r for r in _RecordHook.records if r['kind'] == 'val']
    assert [r['done'] for r in vals] == [2, 4, 6, 8]
    assert [r['mid'] for r in vals] == [True, False, True, False]
    assert [r['metrics']['coco/bbox_mAP'] for r in vals] == _SCRIPTED
    work = str(tmp_path / 'work')
    best = sorted(osp.basename(p) for p in glob.glob(osp.join(work, 'best_*.pth')))
    assert best == ['best_coco_bbox_mAP_iter_6.pth']
    assert not glob.glob(osp.join(work, '*.tmp'))
    assert sorted(osp.basename(p) for p in glob.glob(osp.join(work, 'epoch_*.pth'))) == \
        ['epoch_2.pth']
    ckpt = torch.load(osp.join(work, 'best_coco_bbox_mAP_iter_6.pth'), map_location='cpu',
                      weights_only=True)
    assert ckpt['meta']['iter'] == 6 and ckpt['meta']['epoch'] == 1


# ------------------------------------------------------ named default hooks
def test_named_default_hooks_override_and_turn_off_by_name(tmp_path, data):
    """The EMA and aug-switch hooks are default_hooks entries: the base
    config's (r18: stop 3 epochs before the end) are there, a child
    overrides one key of one by name, and None turns one off (mmengine
    alone asserts on None for names it does not define)."""
    def hooks(runner):
        return {type(h).__name__: h for h in runner.hooks}

    # the tiny config turns both off (ema=None, aug_switch=None)
    (tmp_path / 'off').mkdir()
    (tmp_path / 'on').mkdir()
    off = hooks(_runner(tmp_path / 'off', data))
    assert 'RTDETRv2EMAHook' not in off and 'RTDETRv2AugSwitchHook' not in off
    # the base config's entries, one key overridden by name
    extra = "default_hooks = dict(ema=dict(type='RTDETRv2EMAHook', momentum=5e-3),\n" \
            "                     aug_switch=dict(type='RTDETRv2AugSwitchHook'," \
            " stop_epochs_before_end=2))"
    on = hooks(_runner(tmp_path / 'on', data, extra=extra,
                       options={'default_hooks.ema.warmup_steps': 7}))
    assert on['RTDETRv2EMAHook'].ema_cfg['momentum'] == 5e-3
    assert on['RTDETRv2EMAHook'].warmup_steps == 7
    assert on['RTDETRv2AugSwitchHook'].stop_epochs_before_end == 2
    assert sum(type(h).__name__ == 'RTDETRv2EMAHook' for h in on.values()) == 1
