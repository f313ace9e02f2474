"""``RTDETRv2CheckpointHook`` on tiny real runs: which files exist when.

What it adds over mmengine's ``CheckpointHook``, checked by its effects on
the work dir only (not by how the train loop tells it about mid-epoch
validations):

- a new checkpoint (regular or best) is written *before* the one it
  replaces is deleted, and before ``last_checkpoint`` points at it;
- with a fractional ``val_interval`` a validation inside an epoch is
  followed by a resumable ``iter_<n>.pth`` (meta epoch = current epoch,
  iter = n, optimizer state), which replaces the previous one and is
  dropped once the next epoch checkpoint exists; a best score found there
  makes ``best_<key>_iter_<n>.pth``;
- best-checkpoint bookkeeping: a score that does not improve keeps the
  previous best file; one that does replaces it (per key with several
  keys); the epoch checkpoint saved with a new best records it in its
  message hub (``best_score`` / ``best_ckpt``), as mmengine's does;
- a warning when the runner is not ``RTDETRv2Runner`` (in-place saving).

The runs use a one-parameter model on a list of tensors (RTDETRv2Runner,
RTDETRv2EpochBasedTrainLoop, a scripted metric): the hook and the loop are
the real ones, everything else is as small as possible.
"""
import glob
import os
import os.path as osp

import pytest
import torch
from mmdet.registry import HOOKS, RUNNERS
from mmengine.hooks import Hook

import rtdetr_mm  # noqa: F401
from rtdetr_mm.engine.checkpoint_safety import safe_load_checkpoint
from rtdetr_mm.engine.runner import RTDETRv2Runner
from rtdetr_mm.testing.toy_run import toy_run_config

pytestmark = pytest.mark.timeout(120)


# ------------------------------------------------------------ stand-ins
def _ckpt_files(work_dir):
    return sorted(osp.basename(p) for p in glob.glob(osp.join(work_dir, '*.pth*')))


def _pointer(work_dir):
    path = osp.join(work_dir, 'last_checkpoint')
    if not osp.exists(path):
        return None
    with open(path) as f:
        return osp.basename(f.read().strip())


@RUNNERS.register_module(force=True)
class _CkptListingRunner(RTDETRv2Runner):
    """Records, at each ``save_checkpoint`` call, the file being written, the
    checkpoint files present just before, and where ``last_checkpoint``
    points just before."""

    def save_checkpoint(self, out_dir, filename, *args, **kwargs):
        self.saves.append(dict(file=filename, before=_ckpt_files(self.work_dir),
                               pointer=_pointer(self.work_dir)))
        super().save_checkpoint(out_dir, filename, *args, **kwargs)


@HOOKS.register_module(force=True)
class _CkptListingHook(Hook):
    """Checkpoint files at the start of every iteration and after training
    (``(iteration, files, last_checkpoint)``); the content of every
    ``iter_*.pth`` seen."""
    priority = 'LOWEST'

    def before_train(self, runner):
        runner.saves = getattr(runner, 'saves', [])
        runner.listings = []
        runner.iter_ckpts = {}

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        files = _ckpt_files(runner.work_dir)
        runner.listings.append((runner.iter, files, _pointer(runner.work_dir)))
        for name in files:  # the mid-epoch files, read while they exist
            if name.startswith('iter_') and name not in runner.iter_ckpts:
                runner.iter_ckpts[name] = safe_load_checkpoint(osp.join(runner.work_dir, name))

    def after_train(self, runner):
        runner.listings.append(('end', _ckpt_files(runner.work_dir), _pointer(runner.work_dir)))


def _run(work_dir, *, epochs, val_interval, samples, scores, checkpoint,
         runner_type='_CkptListingRunner'):
    cfg = toy_run_config(work_dir, name='ckpt_hook', epochs=epochs, val_interval=val_interval,
                         samples=samples, scores=scores, metric=dict(prefix='toy'),
                         checkpoint=checkpoint, custom_hooks=[dict(type='_CkptListingHook')],
                         runner_type=runner_type)
    runner = RUNNERS.build(cfg)
    runner.saves = []
    runner.train()
    return runner


def _first_write(runner, filename):
    return next(s for s in runner.saves if s['file'] == filename)


def _load(work_dir, name):
    return safe_load_checkpoint(osp.join(str(work_dir), name))


# --------------------------------------------------------------- tests
def test_epoch_checkpoints_written_before_old_ones_are_deleted(tmp_path):
    """3 epochs of 2 iterations, max_keep_ckpts=2, scores 0.5, 0.3, 0.7."""
    work = tmp_path / 'work'
    runner = _run(work, epochs=3, val_interval=1, samples=4, scores=[0.5, 0.3, 0.7],
                  checkpoint=dict(interval=1, max_keep_ckpts=2, save_best='toy/score',
                                  rule='greater'))
    best1, best3 = 'best_toy_score_epoch_1.pth', 'best_toy_score_epoch_3.pth'
    # the end state
    assert _ckpt_files(work) == [best3, 'epoch_2.pth', 'epoch_3.pth']
    assert _pointer(work) == 'epoch_3.pth'
    # epoch_3.pth is complete before epoch_1.pth (the oldest kept) goes, and
    # before last_checkpoint leaves epoch_2.pth
    e3 = _first_write(runner, 'epoch_3.pth')
    assert 'epoch_1.pth' in e3['before'] and e3['pointer'] == 'epoch_2.pth'
    # the new best is complete before the previous best goes
    assert best1 in _first_write(runner, best3)['before']
    # while no score improved (epoch 2), the epoch-1 best stayed; epoch_1 was
    # still kept (2 newest)
    assert runner.listings[4] == (4, [best1, 'epoch_1.pth', 'epoch_2.pth'], 'epoch_2.pth')
    # every save found last_checkpoint pointing at an existing file (or none yet)
    for save in runner.saves:
        assert save['pointer'] is None or save['pointer'] in save['before'], save
    # best bookkeeping: the best file is the epoch-3 model; the epoch
    # checkpoint of epoch 3 knows it (so a resume could later delete it)
    best = _load(work, best3)
    assert best['meta']['epoch'] == 3 and best['meta']['iter'] == 6
    info = _load(work, 'epoch_3.pth')['message_hub']['runtime_info']
    assert info['best_score'] == pytest.approx(0.7)
    assert osp.basename(info['best_ckpt']) == best3
    assert list(info['keep_ckpt_ids']) == [2, 3]
    assert not glob.glob(osp.join(str(work), '*.tmp'))


def test_mid_epoch_validation_writes_iter_checkpoints_and_best_by_iteration(tmp_path):
    """val_interval=0.5, 4 iterations per epoch, 2 epochs: validations after
    iterations 2 (mid), 4 (end), 6 (mid), 8 (end), scores 0.3, 0.2, 0.5, 0.4;
    max_keep_ckpts default (keep all)."""
    work = tmp_path / 'work'
    runner = _run(work, epochs=2, val_interval=0.5, samples=8, scores=[0.3, 0.2, 0.5, 0.4],
                  checkpoint=dict(interval=1, save_best='toy/score', rule='greater'))
    b2, b6 = 'best_toy_score_iter_2.pth', 'best_toy_score_iter_6.pth'
    # checkpoint files at the start of each iteration (what a kill there leaves)
    assert runner.listings == [
        (0, [], None),
        (1, [], None),
        (2, [b2, 'iter_2.pth'], 'iter_2.pth'),
        (3, [b2, 'iter_2.pth'], 'iter_2.pth'),
        (4, [b2, 'epoch_1.pth'], 'epoch_1.pth'),           # iter_2 dropped, 0.2: no new best
        (5, [b2, 'epoch_1.pth'], 'epoch_1.pth'),
        (6, [b6, 'epoch_1.pth', 'iter_6.pth'], 'iter_6.pth'),  # new best replaces b2
        (7, [b6, 'epoch_1.pth', 'iter_6.pth'], 'iter_6.pth'),
        ('end', [b6, 'epoch_1.pth', 'epoch_2.pth'], 'epoch_2.pth'),
    ]
    # first writes, in order: the best of a mid-epoch validation, then the
    # resumable iter file
    first = []
    for save in runner.saves:
        if save['file'] not in first:
            first.append(save['file'])
    assert first == [b2, 'iter_2.pth', 'epoch_1.pth', b6, 'iter_6.pth', 'epoch_2.pth']
    # written before what they replace is deleted
    assert 'iter_2.pth' in _first_write(runner, 'epoch_1.pth')['before']
    assert b2 in _first_write(runner, b6)['before']
    assert 'iter_6.pth' in _first_write(runner, 'epoch_2.pth')['before']
    assert _first_write(runner, 'epoch_2.pth')['pointer'] == 'iter_6.pth'
    # iter_<n>.pth: resumable (optimizer state), meta epoch = epochs done,
    # iter = n; and the same weights as the best file of that validation
    assert sorted(runner.iter_ckpts) == ['iter_2.pth', 'iter_6.pth']
    for name, epoch, it in (('iter_2.pth', 0, 2), ('iter_6.pth', 1, 6)):
        ckpt = runner.iter_ckpts[name]
        assert (ckpt['meta']['epoch'], ckpt['meta']['iter']) == (epoch, it), name
        assert 'optimizer' in ckpt and 'param_schedulers' in ckpt, name
    best = _load(work, b6)
    assert torch.equal(best['state_dict']['w'], runner.iter_ckpts['iter_6.pth']['state_dict']['w'])
    assert best['meta']['epoch'] == 1 and best['meta']['iter'] == 6
    assert 'optimizer' not in best  # best files carry weights only (mmengine's rule)
    final = _load(work, 'epoch_2.pth')
    assert final['meta']['epoch'] == 2 and final['meta']['iter'] == 8
    assert final['message_hub']['runtime_info']['best_score'] == pytest.approx(0.5)


def test_several_keys_keep_one_best_each(tmp_path):
    """save_best with two keys: each key keeps its own best file; a key that
    does not improve keeps its file while the other key's file is replaced."""
    work = tmp_path / 'work'
    scores = [dict(a=0.3, b=0.6), dict(a=0.5, b=0.2), dict(a=0.4, b=0.7)]
    runner = _run(work, epochs=3, val_interval=1, samples=4, scores=scores,
                  checkpoint=dict(interval=1, max_keep_ckpts=2, save_best=['toy/a', 'toy/b'],
                                  rule='greater'))
    a1, a2 = 'best_toy_a_epoch_1.pth', 'best_toy_a_epoch_2.pth'
    b1, b3 = 'best_toy_b_epoch_1.pth', 'best_toy_b_epoch_3.pth'
    assert runner.listings[2][1] == [a1, b1, 'epoch_1.pth']
    assert runner.listings[4][1] == [a2, b1, 'epoch_1.pth', 'epoch_2.pth']
    assert _ckpt_files(work) == [a2, b3, 'epoch_2.pth', 'epoch_3.pth']
    assert a1 in _first_write(runner, a2)['before']
    assert b1 in _first_write(runner, b3)['before']
    info = _load(work, 'epoch_3.pth')['message_hub']['runtime_info']
    assert info['best_score_toy/a'] == pytest.approx(0.5)
    assert info['best_score_toy/b'] == pytest.approx(0.7)
    assert osp.basename(info['best_ckpt_toy/b']) == b3


def test_plain_runner_is_warned_about_in_place_saving(tmp_path):
    work = tmp_path / 'work'
    runner = _run(work, epochs=1, val_interval=1, samples=2, scores=[0.1],
                  checkpoint=dict(interval=1), runner_type='Runner')
    logs = glob.glob(osp.join(str(work), '*', '*.log'))
    text = ''.join(open(p).read() for p in logs)
    assert 'writes checkpoints in place' in text and type(runner).__name__ in text
    assert _ckpt_files(work) == ['epoch_1.pth']
    # and the RTDETRv2 runner is not warned
    work2 = tmp_path / 'work2'
    _run(work2, epochs=1, val_interval=1, samples=2, scores=[0.1], checkpoint=dict(interval=1))
    text2 = ''.join(open(p).read() for p in glob.glob(osp.join(str(work2), '*', '*.log')))
    assert 'writes checkpoints in place' not in text2
    assert os.path.exists(osp.join(str(work2), 'epoch_1.pth'))
