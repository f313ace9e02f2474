"""tools/analysis_tools/seed_migration_benchmark.py: the three-arm
measurement (transformers Trainer + the reference seed script, rtdetr_mm
with the config seed_to_config.py writes from it, rtdetr_mm's demo recipe)
driven end to end on a tiny shapes dataset for 2 optimizer steps, 1 seed.

Checked another way than the driver computes it:

* the tables and the plot exist, one row per arm and seed, every run made 2
  optimizer steps (the iterations in each rtdetr_mm checkpoint's message hub:
  4 of 2 images with GRAD_ACCUM 2 for arm b, 2 of 4 for arm c);
* the three arms started from the same weights: tensors of the converted
  ``init.pth`` are found, value for value, in the Trainer arm's ``init_hf``,
  and the configs train.py ran (dumped in their work dirs) load that file;
* arm b ran the seed script's values: its model, built from the config
  train.py dumped, has EOS_COEF 1e-5 and the other loss knobs in its loss,
  and the demo's model shape;
* a --steps that is not a whole number of epochs is refused, naming it.
"""
import contextlib
import csv
import glob
import io
import os
import os.path as osp

import pytest
import torch
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.registry import init_default_scope

from rtdetr_mm.engine.checkpoint_safety import safe_load_checkpoint
from rtdetr_mm.testing.synthetic import make_synthetic_coco
from rtdetr_mm.testing.tools import load_tool

pytestmark = pytest.mark.timeout(400)

STEPS = 2
ARM_DIRS = ('a_hf_trainer', 'b_seed_config', 'c_rtdetr_mm')


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    """8 training images: one epoch = 2 optimizer steps of 4 images in arms b and c."""
    root = tmp_path_factory.mktemp('seed_migration') / 'shapes'
    make_synthetic_coco(str(root), num_train=8, num_val=2, image_size=(96, 128),
                        min_objects=1)
    return str(root)


def _run(argv):
    tool = load_tool('analysis_tools/seed_migration_benchmark')
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = tool.main(argv)
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(scope='module')
def bench(data, tmp_path_factory):
    work_dir = str(tmp_path_factory.mktemp('seed_migration_run'))
    status, out, err = _run(['--work-dir', work_dir, '--steps', str(STEPS), '--seeds', '0',
                             '--data-root', data])
    assert status == 0, (out + err)[-4000:]
    return dict(work_dir=work_dir, out=out, seed_dir=osp.join(work_dir, 'seed_0'))


def _rows(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def _dumped_config(work_dir, name):
    """The config tools/train.py ran (mmengine dumps it into the work dir)."""
    return Config.fromfile(osp.join(work_dir, name))


def test_tables_plot_and_steps(bench):
    work_dir, seed_dir = bench['work_dir'], bench['seed_dir']
    runs = _rows(osp.join(work_dir, 'runs.csv'))
    assert [(r['arm'][0], r['seed'], r['steps']) for r in runs] == [
        ('a', '0', str(STEPS)), ('b', '0', str(STEPS)), ('c', '0', str(STEPS))]
    assert all(r['images_per_step'] == '4' for r in runs)
    arms = _rows(osp.join(work_dir, 'arms.csv'))
    assert [(r['arm'][0], r['seeds'], r['steps']) for r in arms] == [
        ('a', '0', str(STEPS)), ('b', '0', str(STEPS)), ('c', '0', str(STEPS))]
    assert all(float(r['AP_mean']) >= 0 and float(r['wall_s_mean']) > 0 for r in arms)
    table = open(osp.join(work_dir, 'arms.md')).read()
    assert table.startswith('| arm | steps | AP | AP50 |') and table.count('\n| ') == 3  # 3 arm rows
    with open(osp.join(work_dir, 'arms_map.png'), 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    # the iterations each rtdetr_mm run made (message hub of its last checkpoint)
    compare = load_tool('analysis_tools/compare')
    for arm, iterations in (('b_seed_config', 4), ('c_rtdetr_mm', 2)):
        ckpt = safe_load_checkpoint(compare.resolve_checkpoint(osp.join(seed_dir, arm)),
                                    map_location='cpu')
        assert compare.training_time(ckpt)[1] == iterations, arm
    # every command is printed as it can be pasted, the arms in order
    commands = open(osp.join(work_dir, 'commands.sh')).read().splitlines()
    assert [c.split()[1].rsplit('/', 1)[-1] for c in commands] == [
        'seed_to_config.py', 'hf_trainer_baseline.py', 'rtdetrv2_to_mmdet.py', 'train.py',
        'train.py']
    for command in commands:
        assert '$ ' + command in bench['out']
    assert 'idle machine' in bench['out']


def test_arms_start_from_the_same_weights(bench):
    seed_dir = bench['seed_dir']
    init = osp.join(seed_dir, 'init.pth')
    state = safe_load_checkpoint(init, map_location='cpu')['state_dict']
    from safetensors.torch import load_file
    hf = load_file(osp.join(seed_dir, 'a_hf_trainer', 'init_hf', 'model.safetensors'))
    by_shape = {}
    for tensor in hf.values():
        by_shape.setdefault(tuple(tensor.shape), []).append(tensor)
    # every randomly initialised weight of the backbone, encoder and decoder
    # is one of the Trainer arm's initial tensors (a fused q/k/v projection:
    # each third)
    keys = [k for k in state if k.endswith('weight') and state[k].dim() >= 2
            and state[k].float().std() > 0]
    assert len(keys) > 50
    for key in keys:
        parts = state[key].chunk(3) if key.endswith('in_proj_weight') else [state[key]]
        for part in parts:
            assert any(torch.equal(part, t) for t in by_shape.get(tuple(part.shape), [])), \
                f'{key} of {init} is not a tensor of init_hf'
    for arm in ('b_seed_config', 'c_rtdetr_mm'):
        cfg = _dumped_config(osp.join(seed_dir, arm), 'arm_b.py' if arm[0] == 'b' else 'arm_c.py')
        assert cfg.load_from == init, arm


def test_arm_b_runs_the_seed_script_values(bench):
    cfg = _dumped_config(osp.join(bench['seed_dir'], 'b_seed_config'), 'arm_b.py')
    assert (cfg.train_dataloader.batch_size, cfg.optim_wrapper.accumulative_counts) == (2, 2)
    assert cfg.optim_wrapper.optimizer.lr == pytest.approx(1e-5)
    assert cfg.optim_wrapper.dtype == 'bfloat16'
    init_default_scope('mmdet')
    model = MODELS.build(cfg.model)
    loss = model.bbox_head.loss_cls
    assert (loss.eos_coef, loss.label_smoothing, loss.loss_weight) == (1e-5, 0.02, 2.0)
    assert (loss.alpha, loss.gamma) == (0.25, 1.0)
    # the demo's model shape
    assert (model.bbox_head.num_queries, len(model.bbox_head.decoder.layers)) == (100, 2)


def test_refuses_steps_that_are_not_whole_epochs(data, tmp_path):
    status, out, err = _run(['--work-dir', str(tmp_path), '--steps', '3', '--seeds', '0',
                             '--data-root', data])
    assert status == 1
    assert 'error: --steps 3:' in err and 'multiple of 2' in err, err
    assert not osp.exists(osp.join(str(tmp_path), 'seed_0'))


def test_a_second_call_reuses_the_finished_arms(bench, data):
    """A long measurement that stopped goes on: arms whose command finished
    are not trained again (their checkpoints stay as they were) and the
    tables come out the same."""
    work_dir, seed_dir = bench['work_dir'], bench['seed_dir']
    runs_before = _rows(osp.join(work_dir, 'runs.csv'))
    checkpoints = {arm: sorted(glob.glob(osp.join(seed_dir, arm, '*.pth')))
                   for arm in ARM_DIRS[1:]}
    stamps = {p: os.stat(p).st_mtime_ns for paths in checkpoints.values() for p in paths}
    assert stamps
    status, out, err = _run(['--work-dir', work_dir, '--steps', str(STEPS), '--seeds', '0',
                             '--data-root', data])
    assert status == 0, (out + err)[-4000:]
    assert out.count('reusing ') == 3, out[-3000:]
    assert {p: os.stat(p).st_mtime_ns for p in stamps} == stamps
    assert _rows(osp.join(work_dir, 'runs.csv')) == runs_before
