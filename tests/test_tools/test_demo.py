"""The README's main job (`make demo` = tools/demo.py) end to end, shortened:
a few tiny generated images, one epoch, no dataloader workers."""
import json
import os.path as osp
import re
import subprocess
import sys

import cv2
import pytest

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
    images = re.findall(r'^\s+(\S+\.png)$', final, re.M)
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
