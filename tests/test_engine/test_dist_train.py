"""``tools/dist_train.sh CONFIG 2`` on CPU: two gloo ranks train a tiny r18
RT-DETRv2 for 4 iterations, some of them with no GT at all on one or both
ranks (the multi-GPU hang of the official repo before its fix).

A probe module written into tmp_path (imported through ``custom_imports``)
gives each rank a fixed list of images (``FixedRankSampler``), records the
loss normaliser of the head on each rank (``RecordingRTDETRv2Head``) and
saves, before training and after every step, a hash of all parameters, the
image ids of the batch and the environment of the rank (``DistProbeHook``).
The test then checks against the annotation file: no hang (hard timeout, the
process group is killed), parameters bit-identical on both ranks after every
step (and different from the step before), normaliser = max(1, mean over
ranks of the GT count) on both ranks, one thread per rank, gloo, the CPU DDP
wrapper, and the r18 config's ``sync_bn`` ignored (no SyncBatchNorm).
"""
import gc
import json
import math
import os
import os.path as osp
import pickle
import signal
import socket
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.distributed as torch_dist
from mmengine.config import Config
from mmengine.registry import MODEL_WRAPPERS
from torch import nn

from rtdetr_mm.testing.checkout import checkout_env
from rtdetr_mm.engine.dist import setup_cpu_distributed
from rtdetr_mm.testing.tiny_coco import make_tiny_coco, tiny_config

from rtdetr_mm.testing import ROOT
R18 = osp.join(ROOT, 'configs/rtdetrv2/rtdetrv2_r18vd_4xb4-120e_coco.py')
TIMEOUT_S = 240

# Dataset indices per rank, 2 images a batch, 4 iterations. make_tiny_coco
# with empty_every=2 leaves the even indices without objects, so:
# iter 1: rank 0 has no GT; iter 2: both have GT; iter 3: rank 1 has no GT;
# iter 4: no GT anywhere (normaliser clamped to 1).
RANK_INDICES = [[0, 2, 1, 4, 5, 7, 0, 6],
                [1, 3, 3, 5, 4, 6, 2, 4]]
BATCH_SIZE = 2
NUM_ITERS = len(RANK_INDICES[0]) // BATCH_SIZE

PROBE = '''
"""Test-only sampler, head and hook for tests/test_engine/test_dist_train.py."""
import hashlib
import os.path as osp

import torch
import torch.distributed as dist
from mmdet.registry import DATA_SAMPLERS, HOOKS, MODELS
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from rtdetr_mm.models.dense_heads.rtdetrv2_head import RTDETRv2Head


@DATA_SAMPLERS.register_module()
class FixedRankSampler:
    """Yields ``indices[rank]`` in order, whatever the epoch."""

    def __init__(self, dataset, indices, seed=None):
        self.indices = list(indices[dist.get_rank()])

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)

    def set_epoch(self, epoch):
        pass


@MODELS.register_module()
class RecordingRTDETRv2Head(RTDETRv2Head):
    """RTDETRv2Head that keeps (local GT count, normaliser) of each loss."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.normalisers = []

    def _num_boxes(self, local_count, device, dtype):
        value = super()._num_boxes(local_count, device, dtype)
        self.normalisers.append((int(local_count), float(value)))
        return value


def _params_hash(model):
    digest = hashlib.sha256()
    for name, param in model.named_parameters():
        digest.update(name.encode())
        digest.update(param.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@HOOKS.register_module()
class DistProbeHook(Hook):
    """Saves per rank and iteration what tests/test_engine/test_dist_train.py checks."""

    def __init__(self, out_dir):
        self.out_dir = out_dir

    def _module(self, runner):
        return runner.model.module if is_model_wrapper(runner.model) else runner.model

    def _save(self, runner, name, record):
        torch.save(record, osp.join(self.out_dir, f'rank{runner.rank}_{name}.pt'))

    def before_train(self, runner):
        model = self._module(runner)
        self._save(runner, 'init', dict(
            params=_params_hash(model),
            world_size=dist.get_world_size(),
            backend=str(dist.get_backend()),
            num_threads=torch.get_num_threads(),
            wrapper=type(runner.model).__name__,
            sync_bn_layers=sum(isinstance(m, torch.nn.SyncBatchNorm)
                               for m in model.modules()),
            bn_layers=sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                          for m in model.modules())))

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self._img_ids = [int(s.img_id) for s in data_batch['data_samples']]

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        model = self._module(runner)
        # runner.iter counts finished iterations; it is incremented after this hook
        self._save(runner, f'iter{runner.iter + 1}', dict(
            params=_params_hash(model),
            img_ids=self._img_ids,
            normalisers=list(model.bbox_head.normalisers),
            loss=float(outputs['loss'])))
        model.bbox_head.normalisers.clear()
'''


# Stand-ins for slurm's srun (one process per task, with the SLURM_* variables
# srun sets) and `scontrol show hostname` (the first host of the node list).
FAKE_SRUN = """#!{python}
import os, subprocess, sys
args, i, ntasks = sys.argv[1:], 0, 1
while args[i].startswith('-'):
    if args[i] == '-p':
        i += 1
    elif args[i].startswith('--ntasks='):
        ntasks = int(args[i].split('=')[1])
    i += 1
procs = [subprocess.Popen(args[i:], env=dict(
    os.environ, SLURM_PROCID=str(r), SLURM_LOCALID=str(r), SLURM_NTASKS=str(ntasks),
    SLURM_NODELIST='node[1]')) for r in range(ntasks)]
sys.exit(max(p.wait() for p in procs))
"""
FAKE_SCONTROL = """#!/bin/sh
echo "$@" >> "$(dirname "$0")/scontrol.calls"
echo 127.0.0.1
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _run_script(args, env, timeout=TIMEOUT_S):
    """Run ``bash args...`` in its own process group; kill the whole group
    (launcher and ranks) when it outlives ``timeout``."""
    proc = subprocess.Popen(['bash'] + args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f'{args[0]} did not finish in {timeout} s (hang?):\n{out[-6000:]}')
    assert proc.returncode == 0, out[-6000:]
    return out


def _env(tmp_path):
    return checkout_env(extra_paths=[str(tmp_path)], PORT=str(_free_port()),
                        CUDA_VISIBLE_DEVICES='')


def _write_config(tmp_path, data, probe_dir):
    base = tiny_config(str(tmp_path / 'tiny_r18.py'), R18, data, size=(64, 64), max_epochs=1)
    text = f'''
_base_ = {base!r}
custom_imports = dict(imports=['rtdetr_mm', 'dist_probe'], allow_failed_imports=False)
model = dict(
    neck=dict(hidden_dim=64, dim_feedforward=128, num_heads=4),
    bbox_head=dict(type='RecordingRTDETRv2Head', in_channels=(64, 64, 64), hidden_dim=64,
                   num_heads=4, dim_feedforward=128, num_layers=2, num_queries=30,
                   dn_cfg=dict(num_denoising=20)))
train_dataloader = dict(batch_size={BATCH_SIZE}, batch_sampler=None,
                        sampler=dict(_delete_=True, type='FixedRankSampler',
                                     indices={RANK_INDICES!r}))
train_cfg = dict(max_epochs=1, val_interval=100)
# A rank still waiting on a collective after 120 s raises instead of hanging.
env_cfg = dict(dist_cfg=dict(backend='nccl', timeout=120))
randomness = dict(seed=0, diff_rank_seed=True)
custom_hooks = [dict(type='DistProbeHook', out_dir={probe_dir!r})]
'''
    path = tmp_path / 'dist_r18.py'
    path.write_text(text)
    return str(path)


def _gt_counts(ann_file):
    with open(ann_file) as f:
        coco = json.load(f)
    counts = {img['id']: 0 for img in coco['images']}
    for ann in coco['annotations']:
        counts[ann['image_id']] += 1
    return counts


def _load(probe_dir, rank, name):
    return torch.load(osp.join(probe_dir, f'rank{rank}_{name}.pt'), weights_only=True)


@pytest.fixture(scope='module')
def dist_run(tmp_path_factory):
    """Data, config and probe in a tmp folder; 4 iterations on 2 CPU ranks."""
    tmp_path = tmp_path_factory.mktemp('dist')
    (tmp_path / 'dist_probe.py').write_text(textwrap.dedent(PROBE))
    data = make_tiny_coco(str(tmp_path / 'data'), num_images=8, size=(96, 96), empty_every=2)
    probe_dir = tmp_path / 'probe'
    probe_dir.mkdir()
    config = _write_config(tmp_path, data, str(probe_dir))
    work_dir = tmp_path / 'work'
    out = _run_script(['tools/dist_train.sh', config, '2', '--work-dir', str(work_dir)],
                      _env(tmp_path))
    return dict(tmp_path=tmp_path, data=data, probe_dir=str(probe_dir), config=config,
                work_dir=work_dir, out=out)


@pytest.mark.timeout(TIMEOUT_S + 60)
def test_dist_train_two_cpu_ranks(dist_run):
    probe_dir, out = dist_run['probe_dir'], dist_run['out']
    # The r18 config asks for SyncBN; on CPU it is dropped, with a message.
    assert "sync_bn='torch' is ignored on CPU" in out, out[-6000:]
    init = [_load(probe_dir, rank, 'init') for rank in range(2)]
    for record in init:
        assert record['world_size'] == 2 and record['backend'] == 'gloo'
        assert record['num_threads'] == 1
        assert record['wrapper'] == 'CPUDistributedDataParallel'
        assert record['sync_bn_layers'] == 0 and record['bn_layers'] > 0
    # Different init seeds per rank, made equal by the runner's broadcast.
    assert init[0]['params'] == init[1]['params']

    gt_counts = _gt_counts(dist_run['data']['ann_file'])
    image_ids = [[i + 1 for i in indices] for indices in RANK_INDICES]  # json ids are 1-based
    previous = init[0]['params']
    empty_rank_iters = 0
    for it in range(1, NUM_ITERS + 1):
        records = [_load(probe_dir, rank, f'iter{it}') for rank in range(2)]
        batch = slice((it - 1) * BATCH_SIZE, it * BATCH_SIZE)
        local = []
        for rank, record in enumerate(records):
            assert record['img_ids'] == image_ids[rank][batch], (it, rank)
            expected_count = sum(gt_counts[i] for i in record['img_ids'])
            assert len(record['normalisers']) == 1, record['normalisers']
            count, _ = record['normalisers'][0]
            assert count == expected_count, (it, rank, count, expected_count)
            assert math.isfinite(record['loss']), (it, rank, record['loss'])
            local.append(count)
        empty_rank_iters += min(local) == 0
        expected = max(1.0, sum(local) / 2)
        for rank, record in enumerate(records):
            assert record['normalisers'][0][1] == pytest.approx(expected, rel=1e-6), \
                (it, rank, local, record['normalisers'])
        # Same weights on both ranks after the step, and the step changed them.
        assert records[0]['params'] == records[1]['params'], f'weights differ after iter {it}'
        assert records[0]['params'] != previous, f'iter {it} did not update the weights'
        previous = records[0]['params']
    assert empty_rank_iters == 3  # iterations 1, 3 and 4 have a rank without GT
    # Written by rank 0 only, after the other ranks' last step.
    assert osp.isfile(dist_run['work_dir'] / 'epoch_1.pth')


@pytest.mark.timeout(TIMEOUT_S + 60)
def test_dist_test_two_cpu_ranks(dist_run):
    """tools/dist_test.sh on 2 CPU ranks: each rank predicts half of the 8
    images, rank 0 gathers all 8 and evaluates them."""
    tmp_path = dist_run['tmp_path']
    preds = tmp_path / 'preds.pkl'
    out = _run_script(['tools/dist_test.sh', dist_run['config'],
                       str(dist_run['work_dir'] / 'epoch_1.pth'), '2',
                       '--work-dir', str(tmp_path / 'test'), '--out', str(preds)],
                      _env(tmp_path))
    assert 'coco/bbox_mAP' in out, out[-6000:]
    with open(preds, 'rb') as f:
        results = pickle.load(f)
    assert sorted(int(r['img_id']) for r in results) == list(range(1, 9))


@pytest.mark.timeout(TIMEOUT_S + 60)
def test_slurm_train_two_cpu_ranks(dist_run, tmp_path):
    """tools/slurm_train.sh through a stand-in srun: --launcher slurm on CPU
    takes rank and world size from SLURM_*, the master address from
    scontrol, and trains one step with equal weights on both ranks."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    for name, text in (('srun', FAKE_SRUN.format(python=sys.executable)),
                       ('scontrol', FAKE_SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    probe_dir = tmp_path / 'probe'
    probe_dir.mkdir()
    env = _env(dist_run['tmp_path'])
    env.pop('MASTER_ADDR', None)
    env.update(PATH=f"{bin_dir}:{env['PATH']}", MASTER_PORT=env.pop('PORT'), GPUS='2',
               GPUS_PER_NODE='0', CPUS_PER_TASK='1')
    _run_script(['tools/slurm_train.sh', 'cpu', 'rtdetr-test', dist_run['config'],
                 str(tmp_path / 'work'), '--cfg-options',
                 'train_dataloader.sampler.indices=[[0,1],[2,3]]',
                 f'custom_hooks.0.out_dir={probe_dir}'], env)
    init = [_load(str(probe_dir), rank, 'init') for rank in range(2)]
    assert [(r['world_size'], r['backend'], r['wrapper']) for r in init] == \
        [(2, 'gloo', 'CPUDistributedDataParallel')] * 2
    step = [_load(str(probe_dir), rank, 'iter1') for rank in range(2)]
    assert [r['img_ids'] for r in step] == [[1, 2], [3, 4]]
    assert step[0]['params'] == step[1]['params'] != init[0]['params']
    assert not (probe_dir / 'rank0_iter2.pt').exists()
    # MASTER_ADDR was unset: both ranks asked scontrol for the first node.
    assert (bin_dir / 'scontrol.calls').read_text().splitlines() == \
        ['show hostname node[1]'] * 2


# ---------------------------------------------------------------- the CPU / GPU decision
def _launch_cfg(**kw):
    return Config(dict(dict(launcher='pytorch', sync_bn='torch',
                            env_cfg=dict(dist_cfg=dict(backend='nccl'))), **kw))


def test_setup_cpu_distributed_is_a_noop_with_cuda(monkeypatch):
    """With CUDA (or without a launcher) mmengine's own path runs: no
    process group, config untouched (nccl, SyncBN, default DDP wrapper)."""
    def no_group(*args, **kwargs):
        raise AssertionError('setup_cpu_distributed created a process group')

    monkeypatch.setattr(torch_dist, 'init_process_group', no_group)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    for cfg in (_launch_cfg(), _launch_cfg(launcher='slurm'),
                _launch_cfg(model_wrapper_cfg=dict(type='MMDistributedDataParallel'))):
        before = cfg.to_dict()
        assert setup_cpu_distributed(cfg) is False
        assert cfg.to_dict() == before
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    cfg = _launch_cfg(launcher='none')
    assert setup_cpu_distributed(cfg) is False and cfg.to_dict() == _launch_cfg(
        launcher='none').to_dict()


@pytest.mark.timeout(60)
def test_setup_cpu_distributed_without_cuda(monkeypatch):
    """Without CUDA: a gloo group from the launcher's variables (world size
    1 here), one thread, sync_bn dropped, and a DDP wrapper that takes the
    device_ids Runner.wrap_model passes and reverts SyncBatchNorm."""
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.setenv('RANK', '0')
    monkeypatch.setenv('WORLD_SIZE', '1')
    monkeypatch.setenv('LOCAL_RANK', '0')
    monkeypatch.setenv('MASTER_ADDR', '127.0.0.1')
    monkeypatch.setenv('MASTER_PORT', str(_free_port()))
    monkeypatch.delenv('OMP_NUM_THREADS', raising=False)
    threads = torch.get_num_threads()
    cfg = _launch_cfg()
    try:
        assert setup_cpu_distributed(cfg) is True
        assert torch_dist.get_backend() == 'gloo' and torch_dist.get_world_size() == 1
        assert torch.get_num_threads() == 1 and os.environ['OMP_NUM_THREADS'] == '1'
        assert cfg.sync_bn is None
        assert cfg.model_wrapper_cfg == dict(type='CPUDistributedDataParallel',
                                             broadcast_buffers=False,
                                             find_unused_parameters=False)
        # as Runner.wrap_model builds it: device_ids=[LOCAL_RANK]
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.SyncBatchNorm(4))
        wrapped = MODEL_WRAPPERS.build(cfg.model_wrapper_cfg,
                                       default_args=dict(module=model, device_ids=[0]))
        assert type(wrapped).__name__ == 'CPUDistributedDataParallel'
        assert wrapped.device_ids is None
        assert not any(isinstance(m, nn.SyncBatchNorm) for m in wrapped.modules())
        out = wrapped(torch.rand(2, 3, 8, 8))
        out.sum().backward()
        assert out.shape == (2, 4, 6, 6) and wrapped.module[0].weight.grad is not None
        # a configured MMDistributedDataParallel becomes the CPU wrapper
        other = _launch_cfg(model_wrapper_cfg=dict(type='MMDistributedDataParallel',
                                                   find_unused_parameters=True))
        assert setup_cpu_distributed(other) is True  # the existing group is kept
        assert other.model_wrapper_cfg == dict(type='CPUDistributedDataParallel',
                                               find_unused_parameters=True)
    finally:
        # The DDP reducer holds the process group: free it first. Freed after
        # destroy_process_group (when the test returned), gloo's destructor
        # deadlocked in a shuffled run of the suite.
        wrapped = out = None
        gc.collect()
        if torch_dist.is_initialized():
            torch_dist.destroy_process_group()
        torch.set_num_threads(threads)
