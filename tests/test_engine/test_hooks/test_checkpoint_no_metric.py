"""RTDETRv2CheckpointHook with ``save_best`` when the evaluation gives no
metric: CocoMetric reports -1 when the evaluation has no ground truth (an
empty or missing val "annotations"), and mmengine's CheckpointHook took -1
as a first "best". The runs are the one-parameter runs of
test_checkpoint_hook.py (the real hook and loop, a scripted metric)."""
import math
import os.path as osp

import pytest
from test_checkpoint_hook import _ckpt_files, _run

pytestmark = pytest.mark.timeout(120)


def _log(runner):
    with open(osp.join(runner.log_dir, f'{runner.timestamp}.log')) as f:
        return f.read()


@pytest.mark.parametrize('missing', [-1, math.nan])
def test_no_best_checkpoint_without_a_metric(tmp_path, missing):
    """Scores -1 (or NaN), 0.5, -1 (or NaN): the first and last validations
    write no best checkpoint and warn naming the key, the value and the
    epoch; the real score of epoch 2 is the best."""
    work = tmp_path / 'work'
    runner = _run(work, epochs=3, val_interval=1, samples=2, scores=[missing, 0.5, missing],
                  checkpoint=dict(interval=1, max_keep_ckpts=3, save_best='toy/score',
                                  rule='greater'))
    assert _ckpt_files(work) == ['best_toy_score_epoch_2.pth', 'epoch_1.pth', 'epoch_2.pth',
                                 'epoch_3.pth']
    log = _log(runner)
    for epoch in (1, 3):
        assert (f"RTDETRv2CheckpointHook: save_best='toy/score' is {float(missing)} at epoch "
                f'{epoch}: no metric (CocoMetric gives -1 when the evaluation has no ground '
                'truth') in log, log
    assert 'at epoch 2' not in log
    assert runner.message_hub.get_info('best_score') == 0.5


def test_only_missing_metrics_write_no_best_checkpoint(tmp_path):
    work = tmp_path / 'work'
    runner = _run(work, epochs=2, val_interval=1, samples=2, scores=[-1, -1],
                  checkpoint=dict(interval=1, save_best='toy/score', rule='greater'))
    assert not [f for f in _ckpt_files(work) if f.startswith('best')]
    assert 'best_score' not in runner.message_hub.runtime_info
