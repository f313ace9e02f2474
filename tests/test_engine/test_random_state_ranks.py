"""The random-state hook saves one state per rank and each rank resumes with
its own (issue 15 item 5, "CUDA RNG state on several GPUs").

Two gloo processes seed their generators differently, meet at the hook's
``after_train_epoch`` (the gather), rank 0 writes ``checkpoint['rng_state']``
through ``before_save_checkpoint`` (as ``Runner.save_checkpoint`` does, on
rank 0 only), and each rank records what its generators draw next. Both then
scramble their generators, load the checkpoint (``weights_only=True``) and
resume through ``after_load_checkpoint`` + ``before_train``: each must draw
exactly what it drew after the save, and the two ranks' draws differ (so
resuming with rank 0's states would fail on rank 1).

What a CPU cannot check: the CUDA part (``torch.cuda.get_rng_state()`` of the
current device, restored onto ``torch.cuda.current_device()``) and NCCL's
``all_gather_object``. The per-rank selection itself is the same code for
CPU and CUDA states and is checked here.
"""
import os.path as osp
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rtdetr_mm.engine.hooks.random_state_hook import (CKPT_KEY, RTDETRv2RandomStateHook,
                                                      capture_rng_state, select_rng_state)
from rtdetr_mm.testing.ranks import run_two_ranks

pytestmark = pytest.mark.timeout(180)


def _runner(resume=False):
    return SimpleNamespace(cfg=dict(resume=resume), epoch=2, iter=40, seed=7, hooks=[],
                           train_dataloader=SimpleNamespace(sampler=SimpleNamespace(seed=7)))


def _draw():
    return dict(torch=torch.rand(4).tolist(), numpy=np.random.rand(4).tolist(),
                python=[random.random() for _ in range(4)])


def _worker(rank, init_file, out_dir):
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank, world_size=2)
    torch.manual_seed(100 + rank)
    np.random.seed(200 + rank)
    random.seed(300 + rank)
    _draw()  # the run so far
    hook, runner = RTDETRv2RandomStateHook(), _runner()
    hook.after_train_epoch(runner)  # every rank: the gather
    path = osp.join(out_dir, 'ckpt.pth')
    if rank == 0:  # Runner.save_checkpoint is master_only
        checkpoint = {}
        hook.before_save_checkpoint(runner, checkpoint)
        torch.save(checkpoint, path)
    after_save = _draw()
    dist.barrier()

    torch.manual_seed(9)
    np.random.seed(9)
    random.seed(9)
    checkpoint = torch.load(path, weights_only=True)
    hook, runner = RTDETRv2RandomStateHook(), _runner(resume=True)
    hook.after_load_checkpoint(runner, checkpoint)
    hook.before_train(runner)
    resumed = _draw()
    torch.save(dict(after_save=after_save, resumed=resumed,
                    world_size=checkpoint[CKPT_KEY]['world_size'],
                    num_states=len(checkpoint[CKPT_KEY]['states'])),
               osp.join(out_dir, f'rank{rank}.pt'))
    dist.destroy_process_group()


def test_each_rank_resumes_with_its_own_streams(tmp_path):
    # fork: the ranks inherit the imported modules (spawn re-imports mmdet in
    # each, ~40 s a rank on a loaded machine); they set one thread first.
    results = run_two_ranks(_worker, (str(tmp_path / 'init'), str(tmp_path)), str(tmp_path),
                            start_method='fork')
    for result in results:
        assert result['world_size'] == 2 and result['num_states'] == 2
        assert result['resumed'] == result['after_save']
    for stream in ('torch', 'numpy', 'python'):
        assert results[0]['after_save'][stream] != results[1]['after_save'][stream]


def test_select_rng_state_per_rank_and_fallback():
    torch.manual_seed(1)
    first = capture_rng_state()
    torch.manual_seed(2)
    second = capture_rng_state()
    states = [first, second]
    state, warning = select_rng_state(states, 1, 2)
    assert state is second and warning is None
    state, warning = select_rng_state(states, 0, 2)
    assert state is first and warning is None
    state, warning = select_rng_state(states, 0, 1)  # resumed by another number of processes
    assert state is first and '2 process(es), this run has 1' in warning
    state, warning = select_rng_state([first], 1, 2)  # a version-1 checkpoint: rank 0's only
    assert state is first and warning


def test_version_1_checkpoint_still_resumes():
    """The format before per-rank states (version 1: rank 0's states, CUDA as
    a list over devices) is read."""
    torch.manual_seed(5)
    state = dict(capture_rng_state(), cuda=[])
    expected = torch.rand(3)
    torch.manual_seed(6)
    hook, runner = RTDETRv2RandomStateHook(), _runner(resume=True)
    hook.after_load_checkpoint(runner, {CKPT_KEY: dict(version=1, world_size=1, states=[state],
                                                       sampler_seed=7)})
    hook.before_train(runner)
    assert torch.equal(torch.rand(3), expected)
