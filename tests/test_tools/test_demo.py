"""The README's main job (`make demo` = tools/demo.py) end to end, shortened:
a few tiny generated images, one epoch, no dataloader workers."""
import csv
import json
import os.path as osp
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
from mmengine.fileio import load

from rtdetr_mm.testing.checkout import checkout_env

from rtdetr_mm.testing import ROOT


@pytest.mark.timeout(400)
def test_demo_end_to_end_shortened(tmp_path):
    work, data_root = tmp_path / 'work', tmp_path / 'shapes'
    options = ['image_size=(128,128)', 'train_dataloader.batch_size=4']
    for split in ('train', 'val', 'test'):
        options += [f'{split}_dataloader.num_workers=0',
                    f'{split}_dataloader.persistent_workers=False']
    cmd = [sys.executable, 'tools/demo.py', '--work-dir', str(work), '--data-root',
           str(data_root), '--num-train', '8', '--num-val', '4', '--epochs', '1',
           '--score-thr', '0.0', '--cfg-options'] + options
    proc = subprocess.run(cmd, cwd=ROOT, env=checkout_env(threads=2), capture_output=True,
                          text=True, timeout=360)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]

    # the data it generated: COCO json with the 5 shape classes
    with open(data_root / 'annotations' / 'instances_val.json') as f:
        val = json.load(f)
    assert len(val['images']) == 4
    classes = [c['name'] for c in val['categories']]
    assert classes == ['circle', 'square', 'triangle', 'ring', 'cross']

    # progress while training, COCO evaluation of the epoch with per-class AP
    assert re.search(r'Epoch\(train\)\s+\[1\]\[\d+/2\]', out)
    assert 'Epoch(val) [1]' in out
    for name in classes:
        assert f'coco/{name}_precision' in out
    # the final block: metrics, per-class AP, image and plot paths
    final = out[out.index('[demo] final COCO bbox metrics'):]
    for key in ('bbox_mAP', 'bbox_mAP_50', 'bbox_mAP_75', 'bbox_mAP_s'):
        assert re.search(rf'^\s+{key}\s+-?\d\.\d{{3}}$', final, re.M), key
    for name in classes:
        assert re.search(rf'^\s+{name}\s+-?\d\.\d{{3}}$', final, re.M), name
    drawn_block = _section(final, '[demo] prediction images', '[demo] operating-point report')
    images = re.findall(r'^\s+(\S+\.png)$', drawn_block, re.M)
    curve = re.search(r'loss / mAP curves: (\S+)', final).group(1)
    assert images and all(osp.isfile(p) for p in images)
    # one picture per validation image: GT (left) beside the predictions
    # (right), each at the original image size
    assert len(images) == 4 or '... in' in final
    names = {osp.basename(im['file_name']): im for im in val['images']}
    drawn = cv2.imread(images[0])
    source = names[osp.basename(images[0])]
    assert drawn.shape[:2] == (source['height'], 2 * source['width'])
    assert cv2.imread(curve) is not None
    # the training log the plot was made from has the logged losses
    scalars = next(work.glob('*/vis_data/scalars.json'))
    records = [json.loads(line) for line in scalars.read_text().splitlines()]
    assert any('loss' in r for r in records) and any('coco/bbox_mAP' in r for r in records)

    _check_operating_points(final, work, val, classes)


def _section(text, start, end):
    """The lines of ``text`` after the line starting with ``start`` up to
    the line starting with ``end``."""
    lines = text[text.index(start):].splitlines()[1:]
    return '\n'.join(lines[:next(i for i, line in enumerate(lines) if line.startswith(end))])


def _check_operating_points(final, work, val, classes):
    """The printed table against the CSV, the ground truth of the val json
    and the dumped predictions; the report files exist and are valid."""
    # the table: header, column names, rule, one row per class, rule, 'all'
    table = _section(final, '[demo] operating points of the final checkpoint',
                     '[demo] training + validation').splitlines()
    assert table[0].startswith('Operating points at score >= 0, IoU >= 0.5'), table
    rows = [line.split() for line in table[1:] if not line.startswith('-')]
    assert rows[0] == ['class', 'GT', 'TP', 'FP', 'FN', 'precision', 'recall', 'F1',
                       'best', 'thr', 'best', 'F1', 'P@best', 'R@best']
    printed = {row[0]: row[1:] for row in rows[1:]}
    assert list(printed) == classes + ['all']

    # the report files: printed, in the work dir, valid
    paths = re.findall(r'^\s+(\S+)$', _section(final, '[demo] operating-point report',
                                                '[demo] predictions'), re.M)
    names = ['operating_points.csv', 'pr_curve.png', 'f1_curve.png', 'confusion_matrix.png',
             'confusion_matrix.csv']
    assert paths == [str(work / name) for name in names], paths
    for png in paths[1:4]:
        image = cv2.imread(png)
        assert image is not None and image.shape[0] > 100 and image.shape[1] > 100, png

    # every printed number is the CSV's (3 decimals, '-' for NaN)
    with open(paths[0], newline='') as f:
        reader = csv.reader(f)
        header = next(reader)
        csv_rows = list(reader)
    assert header == ['class', 'gt', 'tp', 'fp', 'fn', 'precision', 'recall', 'f1', 'best_thr',
                      'best_f1', 'best_precision', 'best_recall']
    assert [r[0] for r in csv_rows] == classes + ['all']
    counts = {}
    for row in csv_rows:
        cells = printed[row[0]]
        assert cells[:4] == row[1:5], (row, cells)  # GT TP FP FN as integers
        for value, cell in zip(row[5:], cells[4:]):
            number = float(value)
            assert cell == ('-' if np.isnan(number) else f'{number:.3f}'), (row, cells)
        counts[row[0]] = dict(zip(('gt', 'tp', 'fp', 'fn'), map(int, row[1:5])))

    # independent references: GT from the annotation file, predictions from
    # the dumped results.pkl (score_thr 0: every prediction counts)
    category = {c['id']: i for i, c in enumerate(val['categories'])}
    gt = np.bincount([category[a['category_id']] for a in val['annotations']],
                     minlength=len(classes))
    results = load(str(work / 'results.pkl'))
    assert len(results) == len(val['images'])
    labels = np.concatenate([r['pred_instances']['labels'].numpy() for r in results])
    predicted = np.bincount(labels, minlength=len(classes))
    for i, name in enumerate(classes + ['all']):
        c = counts[name]
        want_gt = gt.sum() if name == 'all' else gt[i]
        want_pred = predicted.sum() if name == 'all' else predicted[i]
        assert c['gt'] == want_gt and c['tp'] + c['fn'] == c['gt'], (name, c, want_gt)
        assert c['tp'] + c['fp'] == want_pred, (name, c, want_pred)
        precision, recall = printed[name][4:6]
        if want_pred:
            assert abs(float(precision) - c['tp'] / want_pred) <= 5e-4, (name, precision)
        if want_gt:
            assert abs(float(recall) - c['tp'] / want_gt) <= 5e-4, (name, recall)

    # the confusion matrix CSV: GT classes + background by predicted ones
    with open(paths[4], newline='') as f:
        matrix_rows = list(csv.reader(f))
    assert matrix_rows[0] == ['gt \\ predicted'] + classes + ['background']
    assert [r[0] for r in matrix_rows[1:]] == classes + ['background']
    matrix = np.array([[int(v) for v in r[1:]] for r in matrix_rows[1:]])
    assert matrix.shape == (6, 6) and (matrix >= 0).all() and matrix[-1, -1] == 0
    for i, name in enumerate(classes):
        # a GT that no prediction of its class overlaps is never matched
        assert matrix[i, -1] <= counts[name]['fn'], (name, matrix[i, -1], counts[name])
    # a prediction on background overlaps no GT: a false positive
    assert matrix[-1].sum() <= counts['all']['fp']
