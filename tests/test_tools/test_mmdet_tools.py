"""mmdet's own analysis tools (issue 14.7), as an mmdet user runs them:
``python <mmdet>/.mim/tools/analysis_tools/X.py`` on the demo config as it is
(its ``custom_imports`` load rtdetr_mm), on the json log and the
``tools/test.py --out`` pickle of a 2-iteration demo run.

The demo config reads ``data/shapes/`` relative to the working directory:
every command runs in a temporary folder holding a tiny synthetic shapes
dataset there, so the config needs no data options. Only the loader workers
(2, persistent) and, for training / testing, the input size are shrunk.
"""
import glob
import json
import os
import os.path as osp
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import cv2
import mmdet
import numpy as np
import pytest
from mmdet.evaluation import eval_map
from mmengine.fileio import load

from rtdetr_mm.testing import ROOT
from rtdetr_mm.testing.synthetic import DEFAULT_CLASSES, make_synthetic_coco
from rtdetr_mm.testing.tools import load_tool

DEMO = osp.join(ROOT, 'configs/rtdetrv2_demo/rtdetrv2_r18vd-demo_1xb4-12e_shapes.py')
TOOLS = osp.join(osp.dirname(mmdet.__file__), '.mim', 'tools', 'analysis_tools')
PNG = b'\x89PNG\r\n\x1a\n'
#: the demo's loaders without worker processes
NO_WORKERS = [f'{split}_dataloader.{key}' for split in ('train', 'val', 'test')
              for key in ('num_workers=0', 'persistent_workers=False')]


def _is_png(path):
    with open(path, 'rb') as f:
        return f.read(8) == PNG


def _command(name, *args):
    """``python <mmdet>/.mim/tools/analysis_tools/<name>.py args``."""
    return [sys.executable, osp.join(TOOLS, f'{name}.py'), *map(str, args)]


def _check(result, expect_rc=0):
    """stdout + stderr of a finished command, after checking its exit status."""
    proc, out = result
    assert proc.returncode == expect_rc, f'{proc.args[1]} exited {proc.returncode}:\n{out[-3000:]}'
    return out


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    """The demo config trained for 2 iterations (8 images, batch 4, 1 epoch,
    validated once), then tools/test.py --out results.pkl (and the COCO
    json of the predictions, for coco_error_analysis.py) on 4 images."""
    base = tmp_path_factory.mktemp('mmdet_tools')
    make_synthetic_coco(str(base / 'data' / 'shapes'), num_train=8, num_val=4,
                        image_size=(96, 96), max_objects=3)
    work_dir = str(base / 'work')
    # a visualizer name of its own: mmengine keeps one visualizer per name in a
    # process, and an earlier in-process run's would write the json log elsewhere
    small = ['image_size=(64,64)', 'visualizer.name=test_mmdet_tools_visualizer', *NO_WORKERS]
    cwd = os.getcwd()
    os.chdir(base)  # the demo config's data_root 'data/shapes/' is relative
    try:
        assert load_tool('train').main([
            DEMO, '--work-dir', work_dir, '--cfg-options', 'train_cfg.max_epochs=1',
            'default_hooks.logger.interval=1', *small]) == 0
        assert load_tool('test').main([
            DEMO, osp.join(work_dir, 'epoch_1.pth'), '--work-dir', work_dir,
            '--out', str(base / 'results.pkl'), '--cfg-options',
            f'test_evaluator.outfile_prefix={base / "coco"}', *small]) == 0
    finally:
        os.chdir(cwd)
    log, = glob.glob(osp.join(work_dir, '*', 'vis_data', '2*.json'))  # training's
    return dict(base=base, log=log, results=base / 'results.pkl',
                bbox_json=base / 'coco.bbox.json')


@pytest.fixture(scope='module')
def tools(run):
    """Every tool's (CompletedProcess, stdout + stderr), run two at a time in
    the run folder (each subprocess spends most of its time importing mmdet)."""
    base = run['base']
    commands = dict(
        plot_curve=_command('analyze_logs', 'plot_curve', run['log'], '--keys', 'loss',
                            'bbox_mAP', '--out', base / 'loss.png'),
        cal_train_time=_command('analyze_logs', 'cal_train_time', run['log']),
        confusion_matrix=_command('confusion_matrix', DEMO, run['results'], base / 'confusion',
                                  '--score-thr', '0.0', '--cfg-options', *NO_WORKERS),
        coco_error_analysis=_command(
            'coco_error_analysis', run['bbox_json'], base / 'errors', '--ann',
            base / 'data/shapes/annotations/instances_val.json'),
        browse_dataset=_command('browse_dataset', DEMO, '--output-dir', base / 'browse',
                                '--not-show', '--cfg-options', *NO_WORKERS),
        benchmark=_command('benchmark', DEMO, '--task', 'dataloader', '--max-iter', 3,
                           '--num-warmup', 1, '--log-interval', 1, '--cfg-options',
                           'test_dataloader.batch_size=1', *NO_WORKERS),
        analyze_results=_command('analyze_results', DEMO, run['results'],
                                 base / 'analyze_results', '--topk', 2),
        get_flops=_command('get_flops', DEMO, '--num-images', 1, '--cfg-options', *NO_WORKERS))
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', MPLBACKEND='Agg')

    def execute(command):
        proc = subprocess.run(command, cwd=base, env=env, capture_output=True, text=True,
                              timeout=300)
        return proc, proc.stdout + proc.stderr

    with ThreadPoolExecutor(2) as pool:
        return dict(zip(commands, pool.map(execute, commands.values())))


def test_analyze_logs(run, tools):
    out = _check(tools['plot_curve'])
    assert 'metric is loss' in out and 'metric is bbox_mAP' in out, out
    assert _is_png(run['base'] / 'loss.png')
    out = _check(tools['cal_train_time'])
    seconds = float(re.search(r'average iter time: (\S+) s/iter', out).group(1))
    assert 0 < seconds < 60, out


def test_confusion_matrix(run, tools):
    _check(tools['confusion_matrix'])
    assert _is_png(run['base'] / 'confusion' / 'confusion_matrix.png')


def test_coco_error_analysis(run, tools):
    out = _check(tools['coco_error_analysis'])
    for i, name in enumerate(DEFAULT_CLASSES, 1):
        assert f'saving {i}-{name}' in out, out
        assert _is_png(run['base'] / 'errors' / 'bbox' / f'bbox-{name}-allarea.png')
    assert _is_png(run['base'] / 'errors' / 'bbox' / 'bbox-allclass-allarea.png')


def test_browse_dataset(run, tools):
    _check(tools['browse_dataset'])
    out_dir = run['base'] / 'browse'
    drawn = sorted(os.listdir(out_dir))
    assert drawn == [f'train_{i:06d}.png' for i in range(8)], drawn
    # after the demo's training pipeline: its fixed 256 x 256 resize
    assert cv2.imread(str(out_dir / drawn[0])).shape == (256, 256, 3)


def test_benchmark_dataloader(tools):
    # NOTE: --task inference is mmdet's InferenceBenchmark, which moves the
    # model to CUDA unconditionally ("Torch not compiled with CUDA enabled"
    # without a GPU); the dataloader and dataset tasks run anywhere.
    out = _check(tools['benchmark'])
    fps = float(re.search(r'Overall fps: (\S+) batch/s', out).group(1))
    assert fps > 0, out


def test_analyze_results(run, tools):
    """The top-2 / bottom-2 validation images by per-image mAP (mmdet's
    ``eval_map``, IoU 0.5:0.95) drawn into good/ and bad/, named
    ``<image>_<mAP>.png``. The expected mAPs use the ground truth of the
    annotation file (original pixels), not the config's pipeline: so the
    loading steps the tool takes from our train pipeline (mmcv's
    LoadImageFromFile + LoadAnnotations; the image_size knob leaves that
    loading-only pipeline alone) gave it the right boxes."""
    _check(tools['analyze_results'])
    base = run['base']
    with open(base / 'data/shapes/annotations/instances_val.json') as f:
        val = json.load(f)
    results = load(str(run['results']))
    assert [r['img_id'] for r in results] == [im['id'] for im in val['images']]
    label = {c['id']: i for i, c in enumerate(val['categories'])}
    maps = {}
    for image, result in zip(val['images'], results):
        anns = [a for a in val['annotations'] if a['image_id'] == image['id']]
        gt = dict(bboxes=np.array([[x, y, x + w, y + h] for x, y, w, h in
                                   (a['bbox'] for a in anns)], np.float32).reshape(-1, 4),
                  labels=np.array([label[a['category_id']] for a in anns], np.int64))
        pred = result['pred_instances']
        boxes, scores, labels = (pred[k].numpy() for k in ('bboxes', 'scores', 'labels'))
        dets = [np.hstack([boxes[labels == c], scores[labels == c, None]])
                for c in range(len(DEFAULT_CLASSES))]
        aps = [eval_map([dets], [gt], iou_thr=thr, logger='silent', nproc=1)[0]
               for thr in np.linspace(0.5, 0.95, 10)]
        maps[image['file_name']] = (sum(aps) / len(aps), image)
    ranked = sorted(maps, key=lambda name: maps[name][0])  # stable, as the tool's sort

    def expected(names):
        return sorted(f'{osp.splitext(n)[0]}_{round(maps[n][0], 3)}.png' for n in names)

    out_dir = base / 'analyze_results'
    assert sorted(os.listdir(out_dir / 'good')) == expected(ranked[-2:])
    assert sorted(os.listdir(out_dir / 'bad')) == expected(ranked[:2])
    for name in ranked[:2] + ranked[-2:]:
        _, image = maps[name]
        folder = 'bad' if name in ranked[:2] else 'good'
        drawn = cv2.imread(str(out_dir / folder / expected([name])[0]))
        assert drawn is not None and drawn.shape == (image['height'], image['width'], 3)


def test_get_flops(tools):
    out = _check(tools['get_flops'])
    assert re.search(r'Flops: \d', out), out
