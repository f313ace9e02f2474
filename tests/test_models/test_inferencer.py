"""``mmdet.apis.DetInferencer`` with our configs and converted weights.

The README's one-liner runs in a fresh interpreter (as a user would run it:
from the repository root, nothing imported first) on a checkpoint that
``tools/model_converters/rtdetrv2_to_mmdet.py`` converted from weights in
the official RT-DETRv2 layout; its saved predictions must equal the
detector's own ``test_step`` predictions on the same image, computed here
from the config and the unconverted weights (mmengine's ``Compose`` of the
config's test pipeline, no inferencer and no checkpoint loading involved).
"""
import json
import os.path as osp
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from rtdetr_mm.testing.checkout import checkout_env

from rtdetr_mm.testing import ROOT
CONFIG = 'configs/rtdetrv2/rtdetrv2_r18vd_4xb4-120e_coco.py'
# The README shows these two lines (README.md, "Inference"); the test runs
# them with its own checkpoint, image and output folder in place of
# README_WEIGHTS, README_IMAGE and README_OUT.
README_IMPORT = 'from mmdet.apis import DetInferencer'
README_WEIGHTS = 'checkpoints/rtdetrv2_r18vd_coco.pth'
README_IMAGE = 'demo.jpg'
README_OUT = 'outputs/'
README_LINE = (f"DetInferencer(model='{CONFIG}', weights='{README_WEIGHTS}', device='cpu')"
               f"('{README_IMAGE}', out_dir='{README_OUT}', no_save_pred=False)")

pytestmark = pytest.mark.timeout(300)


def test_readme_shows_the_one_liner():
    with open(osp.join(ROOT, 'README.md')) as f:
        readme = f.read()
    assert README_IMPORT in readme and README_LINE in readme, (
        f'README.md should show\n{README_IMPORT}\n{README_LINE}')


def _official_layout(state_dict: dict) -> dict:
    """Our keys -> the official RT-DETRv2 keys (the converter's inverse:
    backbone./neck./bbox_head. -> backbone./encoder./decoder.)."""
    prefixes = {'backbone.': 'backbone.', 'neck.': 'encoder.', 'bbox_head.': 'decoder.'}
    out = {}
    for key, value in state_dict.items():
        old = next(p for p in prefixes if key.startswith(p))
        out[prefixes[old] + key[len(old):]] = value
    return out


def _draw_image(path: str) -> None:
    """A 240 x 320 BGR image with a few filled shapes on a noisy background."""
    rng = np.random.default_rng(0)
    img = (rng.random((240, 320, 3)) * 80).astype(np.uint8)
    cv2.rectangle(img, (30, 40), (120, 150), (40, 200, 40), -1)
    cv2.circle(img, (220, 90), 45, (200, 40, 200), -1)
    cv2.rectangle(img, (180, 160), (300, 220), (30, 60, 220), -1)
    cv2.imwrite(path, img)


def test_readme_one_liner_matches_test_step(tmp_path):
    from mmcv.transforms import Compose
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import init_default_scope

    import rtdetr_mm  # noqa: F401
    init_default_scope('mmdet')
    cfg = Config.fromfile(osp.join(ROOT, CONFIG))
    # PyTorch's default initialisation (no init_weights): varied scores and
    # boxes, unlike the official head init (scores ~0.01, boxes = anchors)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).eval()

    # official-layout weights -> the converter -> the README's checkpoint
    official = str(tmp_path / 'official.pth')
    torch.save(dict(model=_official_layout(model.state_dict())), official)
    weights = str(tmp_path / 'checkpoints' / 'rtdetrv2_r18vd_coco.pth')
    convert = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools/model_converters/rtdetrv2_to_mmdet.py'),
         official, weights, '--config', osp.join(ROOT, CONFIG)],
        cwd=ROOT, env=checkout_env(), capture_output=True, text=True, timeout=120)
    assert convert.returncode == 0, convert.stdout + convert.stderr

    image = str(tmp_path / 'demo.jpg')
    _draw_image(image)
    out_dir = str(tmp_path / 'outputs') + '/'
    line = (README_LINE.replace(repr(README_WEIGHTS), repr(weights))
            .replace(repr(README_IMAGE), repr(image)).replace(repr(README_OUT), repr(out_dir)))
    assert line.count(str(tmp_path)) == 3, line
    run = subprocess.run([sys.executable, '-c', f'{README_IMPORT}; {line}'], cwd=ROOT,
                         env=checkout_env(), capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    with open(osp.join(out_dir, 'preds', 'demo.json')) as f:
        preds = json.load(f)
    assert osp.isfile(osp.join(out_dir, 'vis', 'demo.jpg'))

    # the detector's own test_step on the same file (no inferencer)
    pipeline = [t for t in cfg.test_dataloader.dataset.pipeline
                if t['type'] != 'LoadAnnotations']
    data = Compose(pipeline)(dict(img_path=image, img_id=0))
    with torch.no_grad():
        ref = model.test_step(pseudo_collate([data]))[0].pred_instances
    assert data['data_samples'].ori_shape == (240, 320)

    k = cfg.model.bbox_head.test_cfg['max_per_img']
    assert len(preds['scores']) == len(ref.scores) == k
    # compared as sets: detections with equal scores may come out of top-k
    # in either order, so both lists are sorted by (score, label, box)
    def rows(labels, scores, boxes):
        table = np.column_stack([np.round(np.asarray(scores, dtype=np.float64), 4),
                                 np.asarray(labels), np.round(np.asarray(boxes), 1),
                                 np.asarray(scores), np.asarray(boxes)])
        return table[np.lexsort(table[:, 5::-1].T)]
    got = rows(preds['labels'], preds['scores'], preds['bboxes'])
    want = rows(ref.labels.numpy(), ref.scores.numpy(), ref.bboxes.numpy())
    np.testing.assert_array_equal(got[:, 1], want[:, 1])  # labels
    np.testing.assert_allclose(got[:, 6], want[:, 6], rtol=0, atol=1e-5)  # scores
    np.testing.assert_allclose(got[:, 7:], want[:, 7:], rtol=0, atol=1e-2)  # boxes
    # not a degenerate output: varied labels, scores and boxes (original pixels)
    print(f"{len(set(preds['labels']))} labels, scores {min(preds['scores']):.4f}.."
          f"{max(preds['scores']):.4f}, box std {np.std(preds['bboxes'], axis=0)}")
    assert len(set(preds['labels'])) >= 3 and np.ptp(preds['scores']) > 5e-3
    boxes = np.asarray(preds['bboxes'])
    assert np.std(boxes, axis=0).min() > 1.0 and boxes[:, 2].max() > 160
