"""Run settings out of range stop ``tools/train.py`` before anything is built.

Each case goes through ``tools/train.py``'s ``main`` with ``--cfg-options``
(as a user would) on a tiny RT-DETRv2 config. The error must name the key,
the value and the valid range; the dataset of the config does not exist for
the range cases, so an error about the data instead would mean the check
came too late.
"""
import glob
import os.path as osp

import pytest
from mmengine.config import Config

from rtdetr_mm.engine.runner.run_settings import (RunSettingsError, epoch_length_problem,
                                                  run_settings_problems)
from rtdetr_mm.testing import ROOT
from rtdetr_mm.testing.tiny_coco import make_tiny_coco, tiny_config
from rtdetr_mm.testing.tools import load_tool

R18 = osp.join(ROOT, 'configs/rtdetrv2/rtdetrv2_r18vd_4xb4-120e_coco.py')
HEAD = 'model.bbox_head'
COST = 'model.train_cfg.assigner.match_costs'


@pytest.fixture(scope='module')
def train():
    return load_tool('train')


@pytest.fixture(scope='module')
def missing_data_config(tmp_path_factory):
    """A tiny config whose annotation file does not exist."""
    base = tmp_path_factory.mktemp('settings')
    data = dict(data_root=str(base / 'nowhere'), ann_file=str(base / 'nowhere/ann.json'),
                img_dir=str(base / 'nowhere/images'))
    # the tiny config turns the EMA off; this one keeps it (its momentum is checked)
    ema = "default_hooks = dict(ema=dict(type='RTDETRv2EMAHook', momentum=1e-4))"
    return tiny_config(str(base / 'cfg.py'), R18, data, size=(64, 64), small_model=True,
                       extra=ema)


@pytest.fixture(scope='module')
def data_config(tmp_path_factory):
    """A tiny config on 8 real images."""
    base = tmp_path_factory.mktemp('settings_data')
    data = make_tiny_coco(str(base / 'data'), num_images=8, size=(64, 64))
    return tiny_config(str(base / 'cfg.py'), R18, data, size=(64, 64), max_epochs=1,
                       batch_size=2, small_model=True)


CASES = [
    # (option, key named, valid range named)
    (f'{HEAD}.loss_cls.alpha=1.5', f'{HEAD}.loss_cls.alpha=1.5', 'in [0, 1]'),
    (f'{HEAD}.loss_cls.gamma=-1.0', f'{HEAD}.loss_cls.gamma=-1.0', '>= 0'),
    (f'{HEAD}.loss_cls.eos_coef=-0.1', f'{HEAD}.loss_cls.eos_coef=-0.1', '>= 0'),
    (f'{HEAD}.loss_cls.label_smoothing=1.0', f'{HEAD}.loss_cls.label_smoothing=1.0',
     'in [0, 1)'),
    (f'{COST}.0.weight=-2.0', f'{COST}[0].weight=-2.0', '>= 0'),
    ('optim_wrapper.accumulative_counts=0', 'optim_wrapper.accumulative_counts=0',
     'an integer >= 1'),
    ('default_hooks.ema.momentum=1.5', 'default_hooks.ema.momentum=1.5', 'in (0, 1)'),
    ('train_cfg.max_epochs=0', 'train_cfg.max_epochs=0', 'an integer >= 1'),
    ('train_cfg.val_interval=0', 'train_cfg.val_interval=0', '> 0'),
    ('train_dataloader.batch_size=0', 'train_dataloader.batch_size=0', 'an integer >= 1'),
    ('image_size=255', 'image_size=255', '224 or 256'),
    ('param_scheduler.0.warmup_ratio=1.5', 'param_scheduler[0].warmup_ratio=1.5',
     'in (0, 1]'),
    ('optim_wrapper.allow_cpu_fp16=1', 'optim_wrapper.allow_cpu_fp16=1', 'True or False'),
]


def _train_error(train, capsys, argv):
    """tools/train.py's exit status and what it printed from ``error:`` on
    (no traceback after it). Earlier stderr is skipped: mmengine's logger
    may still hold a stream of an earlier test's capture."""
    capsys.readouterr()
    status = train.main(argv)
    err = capsys.readouterr().err
    err = err[err.rindex('error: '):] if 'error: ' in err else err
    assert 'Traceback' not in err, err
    return status, err


@pytest.mark.parametrize('option,key,valid', CASES, ids=[c[0].split('=')[0] for c in CASES])
def test_out_of_range_setting_stops_train_naming_the_key(train, missing_data_config, tmp_path,
                                                         capsys, option, key, valid):
    status, err = _train_error(train, capsys, [missing_data_config, '--work-dir',
                                               str(tmp_path / 'work'), '--cfg-options', option])
    assert status == 1
    assert err.startswith('error: 1 run setting(s) out of range'), err
    assert key in err and valid in err, err
    # nothing was built: the work dir was never made
    assert not osp.exists(tmp_path / 'work')


def test_every_violation_is_listed_at_once(train, missing_data_config, tmp_path, capsys):
    status, err = _train_error(train, capsys, [
        missing_data_config, '--work-dir', str(tmp_path / 'work'), '--cfg-options',
        'train_cfg.max_epochs=0', f'{HEAD}.loss_cls.alpha=2.0'])
    assert status == 1 and err.startswith('error: 2 run setting(s)'), err
    assert 'train_cfg.max_epochs=0' in err and f'{HEAD}.loss_cls.alpha=2.0' in err


def test_settings_checked_in_the_runner_for_mmdet_scripts(missing_data_config):
    """mmdet's own tools build the runner from the registry: the same check."""
    from mmengine.registry import RUNNERS
    from rtdetr_mm.engine.cli import load_config
    cfg = load_config(missing_data_config, 'none', {'train_cfg.max_epochs': 0}, None)
    with pytest.raises(RunSettingsError, match='train_cfg.max_epochs=0'):
        RUNNERS.build(cfg)


def test_range_ends_that_are_valid_pass():
    """The boundaries the table calls valid are accepted; one step outside
    is not (the ranges are closed/open exactly as documented)."""
    cfg = Config.fromfile(R18)
    cfg.merge_from_dict({f'{HEAD}.loss_cls.alpha': 1.0, f'{HEAD}.loss_cls.gamma': 0.0,
                         f'{HEAD}.loss_cls.eos_coef': 0.0,
                         f'{HEAD}.loss_cls.label_smoothing': 0.0,
                         'optim_wrapper.accumulative_counts': 1,
                         'train_cfg.max_epochs': 1, 'train_cfg.val_interval': 0.25})
    assert run_settings_problems(cfg) == []
    cfg.merge_from_dict({f'{HEAD}.loss_cls.alpha': 1.0 + 1e-9})
    assert len(run_settings_problems(cfg)) == 1


def test_booleans_and_strings_are_not_numbers():
    cfg = Config.fromfile(R18)
    cfg.merge_from_dict({'train_cfg.max_epochs': True, 'train_dataloader.batch_size': '8'})
    problems = run_settings_problems(cfg)
    assert [p.split('=')[0] for p in problems] == ['train_dataloader.batch_size',
                                                   'train_cfg.max_epochs'], problems


def test_every_shipped_config_passes():
    configs = sorted(glob.glob(osp.join(ROOT, 'configs', '*', '*.py')))
    assert len(configs) >= 10
    for path in configs:
        assert run_settings_problems(Config.fromfile(path)) == [], path


def test_batch_larger_than_dataset_names_the_cause(train, data_config, tmp_path, capsys):
    """8 images, batch 16, drop_last: 0 iterations per epoch. mmengine would
    fail in the warm-up scheduler; the error names the cause."""
    status, err = _train_error(train, capsys, [
        data_config, '--work-dir', str(tmp_path / 'work'), '--cfg-options',
        'train_dataloader.batch_size=16', 'train_dataloader.drop_last=True'])
    assert status == 1
    assert err == (
        'error: train_dataloader.batch_size=16 with drop_last=True leaves 0 iterations per '
        'epoch: the dataset has 8 images; lower the batch size or set '
        'train_dataloader.drop_last=False\n')


def test_epoch_length_against_torch_dataloader():
    """The formula against torch's own ``len(DataLoader)`` with mmengine's
    ``DefaultSampler`` (which pads each rank to ceil(n / world))."""
    import torch
    from mmengine.dataset import DefaultSampler
    for n in (0, 1, 7, 8, 9):
        for batch in (1, 4, 8, 16):
            for drop_last in (False, True):
                loader = torch.utils.data.DataLoader(
                    list(range(n)), batch_size=batch, drop_last=drop_last,
                    sampler=DefaultSampler(list(range(n)), shuffle=False))
                empty = len(loader) == 0
                assert (epoch_length_problem(n, batch, drop_last) is not None) == empty, \
                    (n, batch, drop_last)
