"""tools/train.py and tools/test.py: mmdet's command line, end to end.

The config has no ``custom_imports``: the scripts import rtdetr_mm
themselves, so resuming works through the weights_only allow-list.
"""
import os.path as osp
import pickle

import pytest
import torch
from rtdetr_mm.testing.tiny_mmdet import make_coco, tiny_cfg

from rtdetr_mm.testing.tools import load_tool


@pytest.fixture(scope='module')
def config_file(tmp_path_factory):
    base = tmp_path_factory.mktemp('tools')
    make_coco(str(base / 'data'))
    cfg = tiny_cfg(str(base / 'data'), work_dir=None)
    cfg.pop('work_dir')
    path = str(base / 'tiny_retinanet.py')
    cfg.dump(path)
    return path


def test_train_resume_test(config_file, tmp_path):
    import torch
    train, test = load_tool('train'), load_tool('test')
    work_dir = str(tmp_path / 'work')

    train.main([config_file, '--work-dir', work_dir])
    assert osp.isfile(osp.join(work_dir, 'epoch_1.pth'))

    # --resume without a path: latest checkpoint in the work dir
    train.main([config_file, '--work-dir', work_dir, '--resume',
                '--cfg-options', 'train_cfg.max_epochs=2'])
    ckpt = osp.join(work_dir, 'epoch_2.pth')
    assert torch.load(ckpt, weights_only=True)['meta']['iter'] == 4

    out = str(tmp_path / 'results.pkl')
    test.main([config_file, ckpt, '--work-dir', work_dir, '--out', out])
    with open(out, 'rb') as f:
        results = pickle.load(f)
    assert len(results) == 2 and 'pred_instances' in results[0]


def test_train_args_as_mmdet(config_file):
    train = load_tool('train')
    args = train.parse_args([config_file, '--amp', '--resume', 'x.pth',
                             '--cfg-options', 'train_cfg.max_epochs=3'])
    cfg = train.build_cfg(args)
    # mmengine's AmpOptimWrapper asserts a GPU: ours, bf16 without CUDA
    assert cfg.optim_wrapper.type == 'RTDETRv2AmpOptimWrapper'
    assert cfg.optim_wrapper.dtype == ('float16' if torch.cuda.is_available() else 'bfloat16')
    assert cfg.resume is True and cfg.load_from == 'x.pth'
    assert cfg.train_cfg.max_epochs == 3
    assert cfg.work_dir == osp.join('./work_dirs', 'tiny_retinanet')
    with pytest.raises(RuntimeError, match='auto_scale_lr'):
        train.build_cfg(train.parse_args([config_file, '--auto-scale-lr']))


def test_test_args_as_mmdet(config_file):
    test = load_tool('test')
    args = test.parse_args([config_file, 'ckpt.pth', '--tta', '--show-dir',
                            'vis', '--work-dir', 'wd'])
    cfg = test.build_cfg(args)
    assert cfg.load_from == 'ckpt.pth' and cfg.work_dir == 'wd'
    assert cfg.model.type == 'DetTTAModel'
    assert cfg.model.module.type == 'RetinaNet'
    assert cfg.default_hooks.visualization.draw is True
    assert cfg.default_hooks.visualization.test_out_dir == 'vis'
