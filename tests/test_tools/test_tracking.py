"""Experiment tracking (issue 14.6): TensorBoard through mmengine's
``TensorboardVisBackend``, enabled by the one documented config line, in a
2-iteration run of ``tools/train.py`` that validates once with
``[CocoMetric, OperatingPointMetric]`` and draws its predictions
(``DetVisualizationHook(draw=True)``). The event file is read back with
tensorboard's own reader."""
import glob
import os.path as osp

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rtdetr_mm.testing import ROOT
from rtdetr_mm.testing.tiny_coco import make_tiny_coco, tiny_config
from rtdetr_mm.testing.tools import load_tool

R18 = osp.join(ROOT, 'configs/rtdetrv2/rtdetrv2_r18vd_4xb4-120e_coco.py')
#: THE line the README documents (our default_runtime.py keeps only
#: LocalVisBackend, whose json log tools/analysis_tools read; a list replaces
#: a list in a child config, so both backends are named)
TENSORBOARD_LINE = ("visualizer = dict(vis_backends=[dict(type='LocalVisBackend'), "
                    "dict(type='TensorboardVisBackend')])")


@pytest.fixture(scope='module')
def events(tmp_path_factory):
    """Scalar and image tags of the run's TensorBoard event file, and the
    run's work dir: 8 images, batch 4, 1 epoch = 2 iterations, one validation."""
    base = tmp_path_factory.mktemp('tracking')
    data = make_tiny_coco(str(base / 'data'), num_images=8, size=(64, 64))
    # a visualizer name of its own: mmengine keeps one visualizer per name in a
    # process, and an earlier in-process run's would write to its own work dir
    extra = f'''{TENSORBOARD_LINE}
visualizer['name'] = 'test_tracking_visualizer'
val_evaluator = [dict(type='CocoMetric', ann_file={data['ann_file']!r}, metric='bbox'),
                 dict(type='OperatingPointMetric', score_thr=0.0)]
default_hooks['visualization'] = dict(draw=True, interval=1)  # keeps tiny_config's hooks
'''
    config = tiny_config(str(base / 'cfg.py'), R18, data, size=(64, 64), max_epochs=1,
                         batch_size=4, small_model=True, extra=extra)
    work_dir = str(base / 'work')
    assert load_tool('train').main([config, '--work-dir', work_dir]) == 0
    files = glob.glob(osp.join(work_dir, '*', 'vis_data', 'events.out.tfevents.*'))
    assert len(files) == 1, files
    acc = EventAccumulator(files[0], size_guidance={'scalars': 0, 'images': 0})
    acc.Reload()
    return dict(scalars=set(acc.Tags()['scalars']), images=set(acc.Tags()['images']),
                acc=acc, work_dir=work_dir)


def test_event_file_has_losses_lr_and_metrics(events):
    scalars = events['scalars']
    for tag in ('loss', 'loss_cls', 'loss_bbox', 'loss_iou',  # last decoder layer
                'enc_loss_cls', 'dn_loss_cls',  # encoder, denoising (1 decoder layer: no aux)
                'lr', 'grad_norm',
                'coco/bbox_mAP', 'coco/bbox_mAP_50',
                'op/F1', 'op/precision', 'op/recall', 'op/best_thr', 'op/best_F1',
                'op/square_F1'):
        assert tag in scalars, (tag, sorted(scalars))
    # both training iterations, at steps 1 and 2 (logger interval 1)
    assert [e.step for e in events['acc'].Scalars('loss')] == [1, 2]
    assert [e.step for e in events['acc'].Scalars('coco/bbox_mAP')] == [1]  # epoch 1


def test_event_file_has_prediction_images(events):
    # DetVisualizationHook(draw=True) in validation: 'val_img' (GT | prediction)
    assert 'val_img' in events['images'], sorted(events['images'])


def test_json_log_still_written(events):
    # the LocalVisBackend's json log (tools/analysis_tools/analyze_logs.py reads it)
    logs = glob.glob(osp.join(events['work_dir'], '*', 'vis_data', '2*.json'))
    assert len(logs) == 1, logs
