"""mmengine's ``EarlyStoppingHook`` with ``RTDETRv2EpochBasedTrainLoop``.

The runs use a one-parameter model on a list of tensors, a scripted metric
(``coco/bbox_mAP`` = a fixed sequence, one value per validation) and the
hook entry of ``configs/_base_/early_stopping.py`` with ``patience=2``; the
loop, ``RTDETRv2CheckpointHook``, ``RTDETRv2AugSwitchHook`` and mmengine's
``EarlyStoppingHook`` are the real ones. Expected stops are hand-computed
from mmengine's rule: a validation improves when mAP >= best + min_delta
(0.001); the run is asked to stop at the ``patience``-th validation in a
row without improvement.

What is checked, by its effects (iterations trained, checkpoint files, their
meta and message hub, the pipeline each iteration trained with):

- a stop inside an epoch (fractional ``val_interval``) ends the run right
  after that validation and its ``iter_<n>.pth``, without finishing the
  epoch; ``after_train`` runs; the best checkpoint of the best validation
  and the final checkpoint (holding the stop) stay;
- a stop at the end of an epoch whose checkpoint the interval skipped still
  leaves that epoch's checkpoint;
- ``--resume`` (auto-resume) of the final checkpoint trains nothing and
  says so;
- aug switch interplay: a stop before the switch finishes the epoch in
  progress, trains N more epochs without strong augmentation and ends;
  resuming inside those N epochs ends at the same place with the same
  weights;
- a ``monitor`` the validation does not report is an error at the first
  validation; ``patience`` / ``min_delta`` out of range are run-settings
  errors; the snippet combines with a shipped fine-tune config.
"""
import glob
import os.path as osp

import pytest
import torch
from mmdet.registry import HOOKS, RUNNERS
from mmengine.config import Config
from mmengine.hooks import Hook

import rtdetr_mm  # noqa: F401
from rtdetr_mm.engine.checkpoint_safety import safe_load_checkpoint
from rtdetr_mm.engine.runner.run_settings import RunSettingsError, run_settings_problems
from rtdetr_mm.testing import ROOT
from rtdetr_mm.testing.toy_run import toy_run_config

pytestmark = pytest.mark.timeout(120)

SNIPPET = osp.join(ROOT, 'configs/_base_/early_stopping.py')
KEY = 'coco/bbox_mAP'


# ------------------------------------------------------------ stand-ins
@HOOKS.register_module(force=True)
class _EsRecorder(Hook):
    """Per trained iteration: (iteration, the train pipeline's mark); the
    number of ``after_train_epoch`` calls; whether ``after_train`` ran."""
    priority = 'LOWEST'

    def before_train(self, runner):
        runner.trained, runner.epochs_ended, runner.ended = [], 0, False

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        pipeline = runner.train_dataloader.dataset.pipeline
        runner.trained.append((runner.iter, pipeline.transforms[0].name))

    def after_train_epoch(self, runner):
        runner.epochs_ended += 1

    def after_train(self, runner):
        runner.ended = True


def _early_stopping(**override):
    """The snippet's hook entry, with ``override``."""
    (hook, ) = Config.fromfile(SNIPPET).custom_hooks
    return dict(hook, **override)


def _run(work_dir, *, epochs, val_interval, samples, scores, checkpoint=None, aug_switch=None,
         early_stopping=None, resume_from=None):
    hooks = [_early_stopping(patience=2, **(early_stopping or {})), dict(type='_EsRecorder')]
    if aug_switch is not None:
        hooks.append(dict(type='RTDETRv2AugSwitchHook', stop_batch_resize=False,
                          switch_pipeline=[dict(type='PipelineMark', name='plain')], **aug_switch))
    cfg = toy_run_config(work_dir, name='early_stop', epochs=epochs, val_interval=val_interval,
                         samples=samples, scores=scores,
                         metric=dict(prefix='coco', key='bbox_mAP'),
                         checkpoint=dict(dict(interval=1, save_best=KEY, rule='greater'),
                                         **(checkpoint or {})),
                         custom_hooks=hooks, resume_from=resume_from)
    runner = RUNNERS.build(cfg)
    runner.train()
    return runner


def _files(work_dir):
    return sorted(osp.basename(p) for p in glob.glob(osp.join(str(work_dir), '*.pth')))


def _pointer(work_dir):
    with open(osp.join(str(work_dir), 'last_checkpoint')) as f:
        return osp.basename(f.read().strip())


def _load(work_dir, name):
    return safe_load_checkpoint(osp.join(str(work_dir), name))


def _log_text(runner):
    return ''.join(open(p).read() for p in glob.glob(osp.join(runner.log_dir, '*.log')))


def _assert_resume_trains_nothing(work_dir, **run_args):
    """Auto-resume (``--resume``) from the work dir's last checkpoint: no
    iteration, no file written, the log says the run already ended."""
    before = {name: osp.getmtime(osp.join(str(work_dir), name)) for name in _files(work_dir)}
    pointer = _pointer(work_dir)
    runner = _run(work_dir, resume_from='auto', **run_args)
    assert runner.trained == [] and runner.ended
    assert {n: osp.getmtime(osp.join(str(work_dir), n)) for n in _files(work_dir)} == before
    assert _pointer(work_dir) == pointer
    assert 'this run already ended' in _log_text(runner)


# --------------------------------------------------------------- tests
def test_stop_inside_an_epoch_with_fractional_val_interval(tmp_path):
    """val_interval=0.5, 4 iterations per epoch: validations after
    iterations 2 (mid), 4 (end), 6 (mid), 8 (end), 10 (mid), ...
    mAP 0.1, 0.3, 0.35 (best), 0.3, 0.349 (< 0.351): the second validation
    in a row without improvement is the 5th, after iteration 10, inside
    epoch 3: the run ends there (10 iterations, 2 epochs ended)."""
    work = tmp_path / 'work'
    args = dict(epochs=10, val_interval=0.5, samples=8, scores=[0.1, 0.3, 0.35, 0.3, 0.349])
    runner = _run(work, **args)
    assert [it for it, _ in runner.trained] == list(range(10))
    assert runner.epochs_ended == 2 and runner.ended
    assert (runner.epoch, runner.iter) == (2, 10)
    assert runner.val_loop.evaluator.metrics[0].calls == 5
    best = 'best_coco_bbox_mAP_iter_6.pth'
    assert _files(work) == [best, 'epoch_1.pth', 'epoch_2.pth', 'iter_10.pth']
    assert _pointer(work) == 'iter_10.pth'
    assert _load(work, best)['meta']['iter'] == 6
    final = _load(work, 'iter_10.pth')
    assert (final['meta']['epoch'], final['meta']['iter']) == (2, 10)
    assert 'optimizer' in final  # resumable
    info = final['message_hub']['runtime_info']
    assert info['early_stop'] == dict(requested_at=10, end_epoch=3, end_iter=10)
    assert info['best_score'] == pytest.approx(0.35)
    _assert_resume_trains_nothing(work, **args)


def test_stop_at_an_epoch_end_leaves_that_epoch_checkpoint(tmp_path):
    """val_interval=1, 2 iterations per epoch, checkpoint interval=3;
    mAP 0.1, 0.3 (best), 0.3, 0.29: asked to stop after epoch 4, whose
    checkpoint the interval skipped: it is written at the end of training."""
    work = tmp_path / 'work'
    args = dict(epochs=10, val_interval=1, samples=4, scores=[0.1, 0.3, 0.3, 0.29],
                checkpoint=dict(interval=3))
    runner = _run(work, **args)
    assert len(runner.trained) == 8 and runner.epochs_ended == 4 and runner.ended
    assert _files(work) == ['best_coco_bbox_mAP_epoch_2.pth', 'epoch_3.pth', 'epoch_4.pth']
    assert _pointer(work) == 'epoch_4.pth'
    final = _load(work, 'epoch_4.pth')
    assert (final['meta']['epoch'], final['meta']['iter']) == (4, 8)
    assert final['message_hub']['runtime_info']['early_stop'] == dict(
        requested_at=8, end_epoch=4, end_iter=8)
    _assert_resume_trains_nothing(work, **args)


SWITCH_SCORES = [0.1, 0.3, 0.35, 0.3, 0.349, 0.36, 0.37, 0.2, 0.2, 0.2]


def test_stop_before_the_aug_switch_keeps_the_last_epochs(tmp_path):
    """10 epochs of 4 iterations, the last 2 without strong augmentation
    (switch at epoch 9). Asked to stop after iteration 10 (as in the first
    test, inside epoch 3): epoch 3 is finished with strong augmentation,
    epochs 4 and 5 train without, the run ends after epoch 5 (20
    iterations). The requests of the validations after iterations 18 and 20
    (0.2, 0.2 after the best 0.37) change nothing."""
    work = tmp_path / 'work'
    runner = _run(work, epochs=10, val_interval=0.5, samples=8, scores=SWITCH_SCORES,
                  aug_switch=dict(stop_epochs_before_end=2))
    assert runner.trained == [(i, 'strong' if i < 12 else 'plain') for i in range(20)]
    assert runner.epochs_ended == 5 and runner.max_epochs == 5
    assert runner.val_loop.evaluator.metrics[0].calls == 10
    assert _files(work) == ['best_coco_bbox_mAP_iter_14.pth'] + [
        f'epoch_{e}.pth' for e in range(1, 6)]
    assert _pointer(work) == 'epoch_5.pth'
    record = dict(requested_at=10, end_epoch=5, end_iter=20)
    for epoch in (3, 5):  # written after the request
        assert _load(work, f'epoch_{epoch}.pth')['message_hub']['runtime_info'][
            'early_stop'] == record
    assert 'early_stop' not in _load(work, 'epoch_2.pth')['message_hub']['runtime_info']
    # resumed inside the last epochs: same end, same pipeline, same weights
    work2 = tmp_path / 'resumed'
    resumed = _run(work2, epochs=10, val_interval=0.5, samples=8, scores=[0.1] * 4,
                   aug_switch=dict(stop_epochs_before_end=2),
                   resume_from=osp.join(str(work), 'epoch_3.pth'))
    assert resumed.trained == [(i, 'plain') for i in range(12, 20)]
    assert _pointer(work2) == 'epoch_5.pth'
    assert torch.equal(_load(work2, 'epoch_5.pth')['state_dict']['w'],
                       _load(work, 'epoch_5.pth')['state_dict']['w'])


def test_stop_after_the_aug_switch_is_immediate(tmp_path):
    """6 epochs of 2 iterations, the last 3 without strong augmentation
    (from epoch 4); mAP 0.5, 0.6, 0.7, 0.7, 0.7: asked to stop after epoch 5,
    already switched: the run ends there (10 iterations), not after epoch 6."""
    work = tmp_path / 'work'
    runner = _run(work, epochs=6, val_interval=1, samples=4, scores=[0.5, 0.6, 0.7, 0.7, 0.7],
                  aug_switch=dict(stop_epochs_before_end=3))
    assert runner.trained == [(i, 'strong' if i < 6 else 'plain') for i in range(10)]
    assert runner.epochs_ended == 5 and _pointer(work) == 'epoch_5.pth'


def test_unknown_monitor_is_an_error_at_the_first_validation(tmp_path):
    with pytest.raises(RunSettingsError) as error:
        _run(tmp_path / 'work', epochs=4, val_interval=0.5, samples=8, scores=[0.1] * 8,
             early_stopping=dict(monitor='coco/mAP'))
    message = str(error.value)
    assert "monitor='coco/mAP'" in message and KEY in message


def test_patience_and_min_delta_ranges_are_run_settings():
    cfg = Config(dict(custom_hooks=[_early_stopping(patience=0, min_delta=-0.1)]))
    problems = run_settings_problems(cfg)
    assert [p.split('=')[0] for p in problems] == ['custom_hooks[0].patience',
                                                   'custom_hooks[0].min_delta'], problems
    assert run_settings_problems(Config(dict(custom_hooks=[_early_stopping()]))) == []


def test_snippet_combines_with_a_fine_tune_config(tmp_path):
    child = tmp_path / 'cfg.py'
    fine_tune = osp.join(ROOT, 'configs/rtdetrv2_finetune/rtdetrv2_r18vd_1xb8-36e_custom.py')
    child.write_text(f'_base_ = [{fine_tune!r}, {SNIPPET!r}]\n')
    cfg = Config.fromfile(str(child))
    assert [hook['type'] for hook in cfg.custom_hooks] == ['EarlyStoppingHook']
    assert cfg.custom_hooks[0]['monitor'] == KEY
    assert run_settings_problems(cfg) == []
