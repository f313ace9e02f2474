"""Issue 5.4: a non-finite loss is caught before the optimizer step.

In-process runs of the small model (tiny COCO, 4 iterations per epoch) with
one loss term forced to NaN at a chosen iteration (the model's ``loss`` is
wrapped on the instance): ``action='raise'`` stops with the iteration and
the term in the message and leaves only finite checkpoints; ``'skip'`` leaves
the weights of that iteration unchanged and trains on. The cross-rank
agreement runs in 2 gloo processes where only rank 1 sees a NaN.
"""
import glob
import os.path as osp

import pytest
import torch
from mmdet.registry import HOOKS
from mmengine.hooks import Hook
from mmengine.registry import RUNNERS

import rtdetr_mm  # noqa: F401
from rtdetr_mm.engine.checkpoint_safety import safe_load_checkpoint
from rtdetr_mm.engine.cli import load_config
from rtdetr_mm.engine.hooks import (NonFiniteLossError, NonFiniteWeightsError,
                                    RTDETRv2NonFiniteLossHook, agree_nonfinite)
from rtdetr_mm.testing.tiny_coco import make_tiny_coco, tiny_config

from rtdetr_mm.testing import ROOT
from rtdetr_mm.testing.ranks import run_two_ranks
R18 = osp.join(ROOT, 'configs/rtdetrv2/rtdetrv2_r18vd_4xb4-120e_coco.py')

pytestmark = pytest.mark.timeout(300)


@HOOKS.register_module(force=True)
class _WeightRecordHook(Hook):
    """Records a weight, its EMA and the optimizer step count after every iteration."""
    priority = 'LOWEST'
    records = []

    def before_train(self, runner):
        type(self).records = [runner.model.bbox_head.enc_score_head.weight.detach().clone()]

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.records.append(runner.model.bbox_head.enc_score_head.weight.detach().clone())


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return make_tiny_coco(str(tmp_path_factory.mktemp('nan')), num_images=8, size=(64, 64))


def _runner(tmp_path, data, hook_args, max_epochs=2):
    extra = f'''
randomness = dict(seed=0)
val_evaluator = None
val_dataloader = None
val_cfg = None
test_evaluator = None
test_dataloader = None
test_cfg = None
# the hook is a default hook of configs/_base_/default_runtime.py: set its args there
default_hooks = dict(checkpoint=dict(save_best=None),
                     visualization=dict(type='DetVisualizationHook', draw=False),
                     nonfinite=dict(_delete_=True, type='RTDETRv2NonFiniteLossHook',
                                    **{hook_args!r}),
                     ema=dict(type='RTDETRv2EMAHook', warmup_steps=3), aug_switch=None)
custom_hooks = [dict(type='_WeightRecordHook')]
'''
    config = tiny_config(str(tmp_path / 'cfg.py'), R18, data, size=(64, 64),
                         max_epochs=max_epochs, batch_size=2, small_model=True, extra=extra)
    return RUNNERS.build(load_config(config, 'none', None, str(tmp_path / 'work')))


def _nan_at(runner, iteration, term='loss_bbox'):
    """Make ``term`` NaN in the forward of the 1-based ``iteration``."""
    loss = runner.model.loss

    def loss_with_nan(*args, **kwargs):
        losses = loss(*args, **kwargs)
        if runner.iter + 1 == iteration:
            losses[term] = losses[term] * float('nan')
        return losses

    runner.model.loss = loss_with_nan


def _all_finite(state_dict):
    return all(bool(torch.isfinite(v).all()) for v in state_dict.values()
               if torch.is_tensor(v) and v.is_floating_point())


def test_nan_loss_stops_before_the_step(tmp_path, data):
    runner = _runner(tmp_path, data, dict(action='raise'))
    _nan_at(runner, 6, 'dn_loss_bbox')
    with pytest.raises(NonFiniteLossError) as info:
        runner.train()
    message = str(info.value)
    assert 'non-finite loss at iteration 6 (epoch 2, batch 2)' in message, message
    assert 'rank 0: dn_loss_bbox=nan' in message, message
    assert 'loss=nan' in message  # the sum is named too
    # the same as data: exactly the poisoned term and the sum, on rank 0
    assert info.value.iteration == 6
    assert info.value.terms == {0: ['dn_loss_bbox', 'loss']}
    # the weights never saw the NaN: 5 recorded iterations, all finite
    records = _WeightRecordHook.records
    assert len(records) == 1 + 5
    assert all(bool(torch.isfinite(w).all()) for w in records)
    assert _all_finite(runner.model.state_dict())
    # epoch_1.pth is the last checkpoint and it is finite
    work = str(tmp_path / 'work')
    assert sorted(osp.basename(p) for p in glob.glob(osp.join(work, '*.pth*'))) == \
        ['epoch_1.pth']
    ckpt = safe_load_checkpoint(osp.join(work, 'epoch_1.pth'))
    assert _all_finite(ckpt['state_dict']) and _all_finite(ckpt['ema_state_dict'])


def test_nonfinite_error_names_every_poisoned_term(tmp_path, data):
    """Two terms poisoned at iteration 2 (+inf in ``loss_iou``, NaN in
    ``enc_loss_cls``): the error names exactly these two and their sum, none
    of the finite terms (final, encoder and denoising ones); a check of the
    total alone could only name ``loss``."""
    torch.manual_seed(0)
    runner = _runner(tmp_path, data, dict(action='raise'), max_epochs=1)
    loss = runner.model.loss
    seen = {}

    def loss_with_inf_and_nan(*args, **kwargs):
        losses = loss(*args, **kwargs)
        if runner.iter + 1 == 2:
            losses['loss_iou'] = losses['loss_iou'] + float('inf')
            losses['enc_loss_cls'] = losses['enc_loss_cls'] * float('nan')
            seen['finite'] = sorted(k for k, v in losses.items()
                                    if 'loss' in k and bool(torch.isfinite(v).all()))
        return losses

    runner.model.loss = loss_with_inf_and_nan
    with pytest.raises(NonFiniteLossError) as info:
        runner.train()
    error = info.value
    assert error.iteration == 2
    assert set(error.terms) == {0}
    assert sorted(error.terms[0][:-1]) == ['enc_loss_cls', 'loss_iou']
    assert error.terms[0][-1] == 'loss'  # the sum, last
    assert len(seen['finite']) >= 5 and not set(seen['finite']) & set(error.terms[0])
    message = str(error)
    assert 'loss_iou=inf' in message and 'enc_loss_cls=nan' in message, message
    assert len(_WeightRecordHook.records) == 1 + 1  # stopped before iteration 2's step


def test_skip_mode_skips_the_step_and_trains_on(tmp_path, data):
    runner = _runner(tmp_path, data, dict(action='skip'), max_epochs=1)
    _nan_at(runner, 3, 'enc_loss_cls')
    runner.train()
    assert runner.iter == 4
    hook = next(h for h in runner.hooks if isinstance(h, RTDETRv2NonFiniteLossHook))
    assert hook.skipped == [3]
    w = _WeightRecordHook.records
    changed = [not torch.equal(w[i], w[i + 1]) for i in range(4)]
    assert changed == [True, True, False, True]  # iteration 3 left the weights alone
    # AdamW stepped 3 times, not 4
    steps = {int(s['step']) for s in runner.optim_wrapper.optimizer.state.values()}
    assert steps == {3}
    ckpt = safe_load_checkpoint(osp.join(str(tmp_path / 'work'), 'epoch_1.pth'))
    assert _all_finite(ckpt['state_dict']) and _all_finite(ckpt['ema_state_dict'])

    # a checkpoint with NaN weights is refused, and nothing is written
    with torch.no_grad():
        runner.model.bbox_head.enc_score_head.weight[0, 0] = float('nan')
    with pytest.raises(NonFiniteWeightsError, match='bbox_head.enc_score_head.weight'):
        runner.save_checkpoint(str(tmp_path / 'work'), 'nan.pth')
    assert not glob.glob(osp.join(str(tmp_path / 'work'), 'nan.pth*'))


def test_skip_mode_stops_after_max_skips(tmp_path, data):
    runner = _runner(tmp_path, data, dict(action='skip', max_skips=1), max_epochs=1)
    loss = runner.model.loss

    def always_nan(*args, **kwargs):
        losses = loss(*args, **kwargs)
        losses['loss_iou'] = losses['loss_iou'] * float('inf')
        return losses

    runner.model.loss = always_nan
    with pytest.raises(NonFiniteLossError,
                       match=r'iteration 2 .*loss_iou=(inf|nan).*max_skips=1') as info:
        runner.train()
    assert info.value.iteration == 2
    assert info.value.terms == {0: ['loss_iou', 'loss']}


# ------------------------------------------------------------ two ranks
def _agree_worker(rank, init_file, out_dir):
    import torch.distributed as dist
    dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank, world_size=2)
    results = {}
    for case, rank1_bad in (('rank1_nan', True), ('none', False)):
        terms = ['loss_cls=nan'] if (rank == 1 and rank1_bad) else []
        bad, per_rank = agree_nonfinite(terms)
        # a collective after the decision: both ranks reach it (none waits)
        flag = torch.tensor([rank])
        dist.all_reduce(flag)
        results[case] = dict(bad=bad, per_rank=per_rank, after=int(flag.item()))
    torch.save(results, osp.join(out_dir, f'rank{rank}.pt'))
    dist.destroy_process_group()


def test_ranks_agree_when_one_rank_sees_nan(tmp_path):
    """Only rank 1 sees a NaN: both ranks decide 'non-finite' and name rank
    1's term; with no NaN both decide 'finite'. Hard timeout 120 s."""
    init_file = str(tmp_path / 'init')
    results = run_two_ranks(_agree_worker, (init_file, str(tmp_path)), str(tmp_path),
                            start_method='spawn')
    for result in results:
        assert result['rank1_nan'] == dict(bad=True, per_rank={1: ['loss_cls=nan']}, after=1)
        assert result['none'] == dict(bad=False, per_rank={}, after=1)
