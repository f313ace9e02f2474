"""End to end through mmdet's standard runner: tools/train.py, --resume and
tools/test.py on a tiny COCO dataset, with torch.load's weights_only=True."""
import glob
import json
import os.path as osp

from rtdetr_mm.testing.checkout import checkout_env, run_python
from rtdetr_mm.testing.tiny_coco import make_tiny_coco, tiny_config

from rtdetr_mm.testing import ROOT
R18 = osp.join(ROOT, 'configs/rtdetrv2/rtdetrv2_r18vd_4xb4-120e_coco.py')


def _run(args, timeout=600):
    proc = run_python(args, timeout=timeout, env=checkout_env(threads=2))
    return proc.stdout + proc.stderr


def _train_losses(work_dir):
    losses = {}
    for path in sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))):
        with open(path) as f:
            for line in f:
                rec = json.loads(line)
                if 'loss' in rec and 'iter' in rec:
                    losses[rec['iter']] = rec['loss']
    return losses


def test_train_resume_test(tmp_path):
    data = make_tiny_coco(str(tmp_path / 'data'), num_images=16, empty_every=5)
    config = tiny_config(str(tmp_path / "tiny_r18.py"), R18, data, max_epochs=8, lr=5e-4)
    work_dir = str(tmp_path / 'work')

    _run(['tools/train.py', config, '--work-dir', work_dir,
          '--cfg-options', 'randomness.seed=0'])
    losses = _train_losses(work_dir)
    assert len(losses) == 32, sorted(losses)
    first = sum(losses[i] for i in range(1, 6)) / 5
    last = sum(losses[i] for i in range(28, 33)) / 5
    assert last < 0.85 * first, (first, last)
    assert osp.isfile(osp.join(work_dir, 'epoch_8.pth'))

    # Resume from the last checkpoint and train two more epochs.
    out = _run(['tools/train.py', config, '--work-dir', work_dir, '--resume',
                '--cfg-options', 'train_cfg.max_epochs=10', 'train_cfg.val_interval=10'])
    assert 'resumed epoch: 8, iter: 32' in out, out[-3000:]
    losses = _train_losses(work_dir)
    assert max(losses) == 40
    assert osp.isfile(osp.join(work_dir, 'epoch_10.pth'))

    out = _run(['tools/test.py', config, osp.join(work_dir, 'epoch_10.pth'),
                '--work-dir', str(tmp_path / 'test')])
    assert 'Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all' in out
    assert 'coco/bbox_mAP' in out
