"""Issue 12: a work dir belongs to one training at a time; ``--resume`` of a
moved or copied work dir uses the work dir's own files; a failed save says
where and how much space is left, and loses nothing.

Everything goes through ``tools/train.py`` (``main(argv)`` in-process, or a
subprocess where two runs must overlap) on the small r18 RT-DETRv2 of
``rtdetr_mm/testing/tiny_coco.py`` (4 images of 64 x 64, one iteration an
epoch, no validation).
"""
import errno
import glob
import importlib.util
import json
import os
import os.path as osp
import re
import shutil
import socket
import subprocess
import sys
import time

import mmdet
import pytest
from mmdet.registry import HOOKS
from mmengine.hooks import Hook

from rtdetr_mm.testing import ROOT
from rtdetr_mm.testing.checkout import checkout_env, popen_python
from rtdetr_mm.testing.tiny_coco import make_tiny_coco, tiny_config

R18 = osp.join(ROOT, 'configs/rtdetrv2/rtdetrv2_r18vd_4xb4-120e_coco.py')
#: a training subprocess with this variable set waits, before its first
#: epoch, until the file it names exists (``WaitForFileHook``)
RELEASE_ENV = 'RTDETR_TEST_RELEASE_FILE'

pytestmark = pytest.mark.timeout(300)


@HOOKS.register_module(force=True)
class WaitForFileHook(Hook):
    """Holds a training (and so its work dir lock) before its first epoch
    until ``$RTDETR_TEST_RELEASE_FILE`` exists (at most 180 s)."""

    def before_train_epoch(self, runner) -> None:
        flag = os.environ.get(RELEASE_ENV)
        if not flag or runner.epoch != 0:
            return
        deadline = time.monotonic() + 180
        while not osp.exists(flag) and time.monotonic() < deadline:
            time.sleep(0.2)


EXTRA = '''
custom_imports = dict(imports=['rtdetr_mm', 'test_work_dir'], allow_failed_imports=False)
custom_hooks = [dict(type='WaitForFileHook')]
randomness = dict(seed=0)
val_dataloader = val_cfg = val_evaluator = None
train_cfg = dict(max_epochs=1, val_interval=1)
# no optimizer state: a third of the bytes to write
default_hooks = dict(checkpoint=dict(save_best=None, max_keep_ckpts=3, save_optimizer=False),
                     visualization=dict(type='DetVisualizationHook', draw=False))
'''


def _tools_train():
    spec = importlib.util.spec_from_file_location('_rtdetr_tools_train_wd',
                                                  osp.join(ROOT, 'tools/train.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def config(tmp_path_factory):
    base = tmp_path_factory.mktemp('work_dir')
    data = make_tiny_coco(str(base / 'data'), num_images=4, size=(64, 64))
    return tiny_config(str(base / 'cfg.py'), R18, data, size=(64, 64), max_epochs=1,
                       batch_size=4, small_model=True, extra=EXTRA)


@pytest.fixture(scope='module')
def train(config):
    sys.path.insert(0, osp.dirname(osp.abspath(__file__)))  # custom_imports
    try:
        yield _tools_train()
    finally:
        sys.path.remove(osp.dirname(osp.abspath(__file__)))


def _lock_record(pid, host=None):
    return dict(pid=pid, host=host or socket.gethostname(), started='2025-01-31 10:00:00 +0000',
                proc_start=None, command='tools/train.py old.py', token='old')


def _reaped_pid():
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, '-c', 'pass'])
    proc.wait()
    return proc.pid


def _log(work_dir):
    """Text of the newest run log in ``work_dir``."""
    logs = sorted(glob.glob(osp.join(work_dir, '*', '*.log')))
    with open(logs[-1]) as f:
        return f.read()


def _pointer(work_dir):
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        return f.read().strip()


def _meta(path):
    from rtdetr_mm.engine.checkpoint_safety import safe_load_checkpoint
    return safe_load_checkpoint(path)['meta']


@pytest.fixture(scope='module')
def trained(config, train, tmp_path_factory):
    """A work dir after 1 epoch, started over a stale lock (a pid of this
    host that no longer runs): (work dir, return code, stale pid)."""
    work = str(tmp_path_factory.mktemp('trained') / 'work')
    os.makedirs(work)
    stale = _reaped_pid()
    with open(osp.join(work, 'train.lock'), 'w') as f:
        json.dump(_lock_record(stale), f)
    rc = train.main([config, '--work-dir', work])
    return work, rc, stale


# ------------------------------------------------------------------ the lock
def test_stale_lock_is_taken_over_with_a_warning(trained):
    work, rc, stale = trained
    assert rc == 0
    log = _log(work)
    assert (f'{work}/train.lock: took over the stale lock of pid {stale} on host '
            f'{socket.gethostname()}, started 2025-01-31 10:00:00 +0000') in log
    assert 'no longer runs on this host' in log
    assert _meta(osp.join(work, 'epoch_1.pth'))['epoch'] == 1
    assert not osp.exists(osp.join(work, 'train.lock'))  # released at the end


def test_lock_of_another_host_is_refused(config, train, tmp_path, capsys):
    work = str(tmp_path / 'work')
    os.makedirs(work)
    lock = osp.join(work, 'train.lock')
    record = _lock_record(1, host='other-node-7')
    with open(lock, 'w') as f:
        json.dump(record, f)
    assert train.main([config, '--work-dir', work]) == 1
    err = capsys.readouterr().err
    assert (f'error: {work} is in use by another training: pid 1 on host other-node-7, '
            f'started 2025-01-31 10:00:00 +0000 (command: tools/train.py old.py); lock file '
            f'{lock}. Wait for that run to finish, or train in another --work-dir; if that '
            f'run is gone (it runs on another host, so this one cannot check), delete '
            f'{lock}.') in err
    with open(lock) as f:
        assert json.load(f) == record  # the other run's lock is left alone
    assert glob.glob(osp.join(work, '*.pth*')) == []
    assert not osp.exists(osp.join(work, 'last_checkpoint'))


def test_second_training_in_a_work_dir_is_refused(config, tmp_path):
    """Two ``tools/train.py`` processes on one work dir: the first holds
    the lock (``WaitForFileHook`` keeps it before its first epoch); the
    second (``max_epochs=5``) exits 1 within seconds naming the first's pid,
    before it builds anything; mmdet's own ``tools/train.py`` (``max_epochs=7``)
    is refused by the runner's ``train`` and writes its config dump to its
    own log dir; then the first finishes with its own checkpoint, pointer
    and config dump (``max_epochs=1``)."""
    work, release = str(tmp_path / 'work'), str(tmp_path / 'release')
    env = checkout_env(extra_paths=[osp.dirname(osp.abspath(__file__))])
    first = popen_python(['tools/train.py', config, '--work-dir', work],
                         env=dict(env, **{RELEASE_ENV: release}))
    try:
        lock = osp.join(work, 'train.lock')
        deadline = time.monotonic() + 120
        while not osp.exists(lock) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert osp.exists(lock), first.communicate(timeout=60)[0][-3000:]
        with open(lock) as f:
            assert json.load(f)['pid'] == first.pid

        start = time.monotonic()
        second = subprocess.run(
            [sys.executable, 'tools/train.py', config, '--work-dir', work,
             '--cfg-options', 'train_cfg.max_epochs=5'],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        took = time.monotonic() - start
        assert second.returncode == 1, second.stdout[-2000:] + second.stderr[-3000:]
        assert (f'error: {work} is in use by another training: pid {first.pid} on host '
                f'{socket.gethostname()}, started ') in second.stderr
        assert f'lock file {lock}. Wait for that run to finish' in second.stderr
        assert 'Traceback' not in second.stderr
        assert took < 60, took  # imports only (the first is held until released)
        assert glob.glob(osp.join(work, '*', 'cfg.py')) == []  # nothing was built

        # mmdet's own script builds our runner from the registry: refused in train()
        mmdet_train = osp.join(osp.dirname(mmdet.__file__), '.mim', 'tools', 'train.py')
        third = subprocess.run(
            [sys.executable, mmdet_train, config, '--work-dir', work,
             '--cfg-options', 'train_cfg.max_epochs=7'],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
        assert third.returncode != 0
        assert f'{work} is in use by another training: pid {first.pid}' in third.stderr
        assert first.poll() is None  # still running, untouched

        open(release, 'w').close()
        out = first.communicate(timeout=180)[0]
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, out[-3000:]
    assert _pointer(work) == osp.join(work, 'epoch_1.pth')
    meta = _meta(osp.join(work, 'epoch_1.pth'))
    assert meta['epoch'] == 1 and 'max_epochs=1' in meta['cfg']
    assert [osp.basename(p) for p in glob.glob(osp.join(work, '*.pth*'))] == ['epoch_1.pth']
    # the config dump in the work dir is the first run's; the second's went to its log dir
    with open(osp.join(work, 'cfg.py')) as f:
        assert 'max_epochs=1' in f.read()
    dumps = glob.glob(osp.join(work, '*', 'cfg.py'))
    assert len(dumps) == 1 and 'max_epochs=7' in open(dumps[0]).read()
    assert not osp.exists(lock)


# ------------------------------------------------ last_checkpoint resolution
def test_moved_work_dir_resumes(trained, config, train, tmp_path):
    """A work dir trained in ``old`` and moved to ``new``: last_checkpoint
    records ``old/epoch_1.pth``, which no longer exists."""
    old, new = str(tmp_path / 'old'), str(tmp_path / 'new')
    shutil.copytree(trained[0], old)
    with open(osp.join(old, 'last_checkpoint'), 'w') as f:
        f.write(osp.join(old, 'epoch_1.pth'))  # as the run in ``old`` wrote it
    os.rename(old, new)
    assert train.main([config, '--work-dir', new, '--resume',
                       '--cfg-options', 'train_cfg.max_epochs=2']) == 0
    log = _log(new)
    assert (f'{new}/last_checkpoint records {old}/epoch_1.pth, outside this work dir (the '
            f'work dir was moved or copied): resuming from {new}/epoch_1.pth') in log
    assert f'Auto resumed from the latest checkpoint {new}/epoch_1.pth' in log
    assert 'resumed epoch: 1, iter: 1' in log
    assert _pointer(new) == osp.join(new, 'epoch_2.pth')
    assert _meta(osp.join(new, 'epoch_2.pth'))['iter'] == 2


def test_copied_work_dir_resumes_from_its_own_file(trained, config, train, tmp_path):
    original = trained[0]
    copy = str(tmp_path / 'copy')
    shutil.copytree(original, copy)
    before = sorted(os.listdir(original)), _pointer(original)
    assert _pointer(copy) == osp.join(original, 'epoch_1.pth')  # exists: the trap
    assert train.main([config, '--work-dir', copy, '--resume',
                       '--cfg-options', 'train_cfg.max_epochs=2']) == 0
    log = _log(copy)
    assert f'Auto resumed from the latest checkpoint {copy}/epoch_1.pth' in log
    assert f'resuming from {copy}/epoch_1.pth' in log
    assert _pointer(copy) == osp.join(copy, 'epoch_2.pth')
    assert (sorted(os.listdir(original)), _pointer(original)) == before


def test_resume_without_a_checkpoint_names_both_paths(trained, config, train, tmp_path, capsys):
    work = str(tmp_path / 'moved')
    shutil.copytree(trained[0], work)
    gone = str(tmp_path / 'gone' / 'epoch_1.pth')
    with open(osp.join(work, 'last_checkpoint'), 'w') as f:
        f.write(gone)
    os.remove(osp.join(work, 'epoch_1.pth'))
    assert train.main([config, '--work-dir', work, '--resume']) == 1
    err = capsys.readouterr().err
    assert (f'error: {work}/last_checkpoint records {gone}, which does not exist, and '
            f'neither does {work}/epoch_1.pth (the file of that name in this work dir). '
            f'Resume from a checkpoint with --resume PATH') in err
    assert _pointer(work) == gone  # nothing rewritten
    assert not osp.exists(osp.join(work, 'train.lock'))


# ------------------------------------------------------------- failed save
def test_failed_save_names_path_and_free_space(trained, config, train, tmp_path, capsys,
                                               monkeypatch):
    """The disk fills up while ``epoch_2.pth`` is written (half of its bytes
    land in ``epoch_2.pth.tmp``, then ENOSPC)."""
    from mmengine.fileio.backends import LocalBackend
    put = LocalBackend.put

    def put_until_full(self, obj, filepath):
        if osp.basename(str(filepath)) == 'epoch_2.pth.tmp':
            with open(filepath, 'wb') as f:
                f.write(obj[:len(obj) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return put(self, obj, filepath)

    monkeypatch.setattr(LocalBackend, 'put', put_until_full)
    work = str(tmp_path / 'work')
    shutil.copytree(trained[0], work)
    assert train.main([config, '--work-dir', work, '--resume',
                       '--cfg-options', 'train_cfg.max_epochs=2']) == 1
    err = capsys.readouterr().err
    path = osp.join(work, 'epoch_2.pth')
    assert re.search(
        rf'error: could not save the checkpoint {re.escape(path)}: No space left on device '
        rf'\(\d+\.\d\d GiB free on the filesystem of {re.escape(work)}\); the partial '
        rf'{re.escape(path)}\.tmp was removed\. The previous checkpoints and last_checkpoint '
        rf'are unchanged\.', err), err[-3000:]
    files = sorted(n for n in os.listdir(work) if osp.isfile(osp.join(work, n)))
    assert files == ['cfg.py', 'epoch_1.pth', 'last_checkpoint']  # no .tmp, no lock
    assert _pointer(work) == osp.join(work, 'epoch_1.pth')
    assert _meta(osp.join(work, 'epoch_1.pth'))['iter'] == 1
