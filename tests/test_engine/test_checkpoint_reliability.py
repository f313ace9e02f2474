"""Issue 5.2: checkpoints that survive a kill, refuse corruption clearly, and
load across a change of the number of classes.

- ``load_from`` a 3-class checkpoint into a 2-class model: the class layers
  keep a fresh initialisation, every other weight is the checkpoint's, and
  the log names the re-initialised keys with both shapes.
- a truncated (half) or random-bytes checkpoint: ``CorruptCheckpointError``
  naming the file, through ``tools/train.py``'s ``load_from`` and
  ``--resume``.
- a real save killed with SIGKILL half-way through writing (the subprocess
  writes half of the serialised bytes, then kills itself; ``_arm_kill_on_save``)
  for a regular checkpoint (``max_keep_ckpts=1``: mmengine would already have
  deleted the previous one) and for a best checkpoint (mmengine deletes the
  previous best first): the previous checkpoint still loads,
  ``last_checkpoint`` names a complete file, and ``--resume`` finishes.
  Without the atomic save (mmengine's ``Runner``/``CheckpointHook``) both
  cases lose the previous file.
"""
import glob
import os
import random
import os.path as osp
import signal

import pytest
import torch
from mmengine.registry import RUNNERS

import rtdetr_mm  # noqa: F401
from rtdetr_mm.engine.checkpoint_safety import CorruptCheckpointError, safe_load_checkpoint
from rtdetr_mm.engine.cli import load_config
from rtdetr_mm.testing.checkout import checkout_env, popen_python
from rtdetr_mm.testing.tiny_coco import make_tiny_coco, register_improving_metric, tiny_config

from rtdetr_mm.testing import ROOT
from rtdetr_mm.testing.tools import load_tool
R18 = osp.join(ROOT, 'configs/rtdetrv2/rtdetrv2_r18vd_4xb4-120e_coco.py')
KILL_ENV = 'RTDETR_TEST_KILL_ON_SAVE'

pytestmark = pytest.mark.timeout(300)


def _arm_kill_on_save(prefix: str) -> None:
    """In this process, the first file written whose name starts with
    ``prefix`` gets half of its bytes, then the process is SIGKILLed."""
    from mmengine.fileio.backends import LocalBackend
    put = LocalBackend.put

    def put_and_die(self, obj, filepath):
        if osp.basename(str(filepath)).startswith(prefix):
            with open(filepath, 'wb') as f:
                f.write(obj[:len(obj) // 2])
                f.flush()
                os.fsync(f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
        return put(self, obj, filepath)

    LocalBackend.put = put_and_die


if os.environ.get(KILL_ENV):  # imported by a training subprocess (custom_imports)
    _arm_kill_on_save(os.environ[KILL_ENV])


register_improving_metric()  # also in the training subprocesses (custom_imports)


EXTRA = '''
custom_imports = dict(imports=['rtdetr_mm', 'test_checkpoint_reliability'],
                      allow_failed_imports=False)
randomness = dict(seed=0)
val_evaluator = dict(_delete_=True, type='ImprovingMetric')
test_evaluator = val_evaluator
train_cfg = dict(max_epochs=2, val_interval=1)
default_hooks = dict(
    ema=None, aug_switch=None,
    checkpoint=dict(interval=1, max_keep_ckpts=1, save_best='coco/bbox_mAP', rule='greater'),
    visualization=dict(type='DetVisualizationHook', draw=False))
'''


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return make_tiny_coco(str(tmp_path_factory.mktemp('reliab')), num_images=4, size=(64, 64))


def _config(tmp_path, data, name='cfg.py', extra=EXTRA):
    return tiny_config(str(tmp_path / name), R18, data, size=(64, 64), max_epochs=2,
                       batch_size=4, small_model=True, extra=extra)


def _start(args, kill_prefix=None):
    # the children import this module by name (custom_imports)
    env = checkout_env(drop=[KILL_ENV], extra_paths=[osp.dirname(osp.abspath(__file__))])
    if kill_prefix:
        env[KILL_ENV] = kill_prefix
    return popen_python(['tools/train.py'] + args, env=env)


def _finish(proc, timeout=200):
    """(return code, output) with a hard timeout."""
    try:
        out = proc.communicate(timeout=timeout)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out


def _pointer(work_dir):
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        return f.read().strip()


def _names(work_dir, pattern='*.pth*'):
    return sorted(osp.basename(p) for p in glob.glob(osp.join(work_dir, pattern)))


# ----------------------------------------------------------- kill while saving
def test_kill_during_save_keeps_previous_checkpoints(tmp_path, data):
    """Two runs side by side, SIGKILLed half-way through writing (a) the
    regular ``epoch_2.pth`` (``max_keep_ckpts=1``), (b) the new best
    ``best_coco_bbox_mAP_epoch_2.pth``; then (a) is resumed to the end."""
    config = _config(tmp_path, data)
    work_a, work_b = str(tmp_path / 'regular'), str(tmp_path / 'best')
    procs = [_start([config, '--work-dir', work_a], kill_prefix='epoch_2.pth'),
             _start([config, '--work-dir', work_b],
                    kill_prefix='best_coco_bbox_mAP_epoch_2.pth')]
    try:
        (rc_a, log_a), (rc_b, log_b) = [_finish(p) for p in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert rc_a == -signal.SIGKILL, log_a[-3000:]
    assert rc_b == -signal.SIGKILL, log_b[-3000:]

    # (a) killed in epoch_2.pth.tmp: epoch_1.pth (which mmengine, with
    # max_keep_ckpts=1, would have deleted before writing) is intact and current
    assert _names(work_a) == ['best_coco_bbox_mAP_epoch_1.pth', 'epoch_1.pth',
                              'epoch_2.pth.tmp'], _names(work_a)
    assert _pointer(work_a) == osp.join(work_a, 'epoch_1.pth')
    ckpt = safe_load_checkpoint(osp.join(work_a, 'epoch_1.pth'))
    assert ckpt['meta']['epoch'] == 1 and ckpt['meta']['iter'] == 1
    with pytest.raises(CorruptCheckpointError, match='epoch_2.pth.tmp'):
        safe_load_checkpoint(osp.join(work_a, 'epoch_2.pth.tmp'))

    # (b) epoch_2.pth was complete before the validation; the old best survives
    assert _names(work_b) == ['best_coco_bbox_mAP_epoch_1.pth',
                              'best_coco_bbox_mAP_epoch_2.pth.tmp', 'epoch_2.pth'], \
        _names(work_b)
    assert _pointer(work_b) == osp.join(work_b, 'epoch_2.pth')
    assert safe_load_checkpoint(osp.join(work_b, 'epoch_2.pth'))['meta']['iter'] == 2
    best = safe_load_checkpoint(osp.join(work_b, 'best_coco_bbox_mAP_epoch_1.pth'))
    assert best['meta']['iter'] == 1
    assert best['message_hub']['runtime_info']['best_score'] == pytest.approx(0.1)

    # (a) --resume (auto: last_checkpoint) finishes the run
    rc, log = _finish(_start([config, '--work-dir', work_a, '--resume']))
    assert rc == 0, log[-3000:]
    assert 'resumed epoch: 1, iter: 1' in log
    assert safe_load_checkpoint(osp.join(work_a, 'epoch_2.pth'))['meta']['iter'] == 2
    # the stale .tmp was overwritten and renamed; the new process's metric
    # restarts at 0.1, not better than the resumed best: the old best stays
    assert _names(work_a) == ['best_coco_bbox_mAP_epoch_1.pth', 'epoch_2.pth'], _names(work_a)


# ------------------------------------------------ corrupt / truncated files
def _tools_train():
    return load_tool('train')


@pytest.fixture(scope='module')
def three_class_ckpt(tmp_path_factory, data):
    """A 1-iteration checkpoint of the small model trained on 3 classes (the
    tiny set with its disks relabelled as a third class every other image)."""
    import json
    tmp = tmp_path_factory.mktemp('three')
    with open(data['ann_file']) as f:
        coco = json.load(f)
    coco['categories'].append(dict(id=3, name='triangle'))
    for ann in coco['annotations']:
        if ann['category_id'] == 2 and ann['image_id'] % 2:
            ann['category_id'] = 3
    ann_file = str(tmp / 'three.json')
    with open(ann_file, 'w') as f:
        json.dump(coco, f)
    extra = """
model['bbox_head']['num_classes'] = 3
randomness = dict(seed=0)
train_dataloader['dataset']['metainfo'] = dict(classes=('square', 'disk', 'triangle'))
val_dataloader = val_cfg = val_evaluator = test_dataloader = test_cfg = test_evaluator = None
default_hooks = dict(checkpoint=dict(save_best=None), ema=None, aug_switch=None,
                     visualization=dict(type='DetVisualizationHook', draw=False))
"""
    config = tiny_config(str(tmp / 'cfg3.py'), R18, dict(data, ann_file=ann_file),
                         size=(64, 64), max_epochs=1, batch_size=4, small_model=True,
                         extra=extra)
    cfg = load_config(config, 'none', None, str(tmp / 'work'))
    runner = RUNNERS.build(cfg)
    runner.train()
    return osp.join(str(tmp / 'work'), 'epoch_1.pth')


@pytest.mark.parametrize('damage,entry', [('truncated', 'load_from'), ('random', 'resume')])
def test_corrupt_checkpoint_names_the_file(tmp_path, data, three_class_ckpt, damage, entry,
                                           capsys):
    """A real checkpoint cut to half its bytes, or random bytes (both kinds
    are read through the same loader; each entry point gets one)."""
    bad = str(tmp_path / f'{damage}.pth')
    if damage == 'truncated':
        with open(three_class_ckpt, 'rb') as f:
            blob = f.read()
        blob = blob[:len(blob) // 2]
    else:
        blob = random.Random(0).randbytes(4096)
    with open(bad, 'wb') as f:
        f.write(blob)
    config = _config(tmp_path, data, extra="default_hooks = dict(ema=None, aug_switch=None, visualization=dict("
                                           "type='DetVisualizationHook', draw=False))")
    args = [config, '--work-dir', str(tmp_path / 'work')]
    args += ['--resume', bad] if entry == 'resume' else ['--cfg-options', f'load_from={bad}']
    capsys.readouterr()
    assert _tools_train().main(args) == 1
    err = capsys.readouterr().err
    message = err[err.index('error: '):]  # printed without a traceback
    assert 'Traceback' not in message and bad in message, err
    assert 'truncated or corrupt' in message, message
    assert f'({len(blob)} bytes)' in message


# --------------------------------------------------- number of classes differs
def test_load_from_other_num_classes_reinitialises_class_layers(tmp_path, data,
                                                                three_class_ckpt):
    config = _config(tmp_path, data, extra="randomness = dict(seed=0)")
    fresh = RUNNERS.build(load_config(config, 'none', None, str(tmp_path / 'fresh')))
    fresh._init_model_weights()
    cfg = load_config(config, 'none', {'load_from': three_class_ckpt}, str(tmp_path / 'load'))
    runner = RUNNERS.build(cfg)
    runner._init_model_weights()
    runner.load_or_resume()

    ckpt = safe_load_checkpoint(three_class_ckpt)['state_dict']
    loaded = runner.model.state_dict()
    reference = fresh.model.state_dict()
    class_keys = sorted(k for k in loaded if k.startswith((
        'bbox_head.enc_score_head.', 'bbox_head.dec_score_head.',
        'bbox_head.denoising_class_embed.')))
    # small model: 1 decoder layer -> enc/dec score heads (weight, bias) + dn embedding
    assert class_keys == ['bbox_head.dec_score_head.0.bias', 'bbox_head.dec_score_head.0.weight',
                          'bbox_head.denoising_class_embed.weight',
                          'bbox_head.enc_score_head.bias', 'bbox_head.enc_score_head.weight']
    for key in loaded:
        if key in class_keys:
            assert ckpt[key].shape[0] == (4 if 'denoising' in key else 3)
            assert loaded[key].shape[0] == (3 if 'denoising' in key else 2)
            assert torch.equal(loaded[key], reference[key]), key  # a fresh init
        else:
            assert torch.equal(loaded[key], ckpt[key]), key
    # the log says which and why
    log_files = glob.glob(osp.join(str(tmp_path / 'load'), '*', '*.log'))
    log = open(log_files[0]).read()
    assert f'{three_class_ckpt} has 3 classes, the model 2' in log
    assert 're-initialised 5 class-dependent parameters' in log
    for key in class_keys:
        assert key in log
    assert 'bbox_head.enc_score_head.weight [3, 64] -> [2, 64]' in log
    assert 'bbox_head.denoising_class_embed.weight [4, 64] -> [3, 64]' in log


def test_resume_with_other_num_classes_is_refused(tmp_path, data, three_class_ckpt):
    config = _config(tmp_path, data)
    cfg = load_config(config, 'none', {'load_from': three_class_ckpt, 'resume': True},
                      str(tmp_path / 'work'))
    runner = RUNNERS.build(cfg)
    with pytest.raises(ValueError, match=r'cannot resume: .*has 3 classes, the model 2'):
        runner.load_or_resume()


def test_random_bytes_always_corrupt_error(tmp_path):
    """Whatever the bytes, the loader answers CorruptCheckpointError (or the
    refusal of a non-allow-listed global), never an error from inside the
    unpickler: 200 seeded random blobs, with and without a pickle header."""
    from rtdetr_mm.engine.checkpoint_safety import (CorruptCheckpointError,
                                                    UnsafeCheckpointError,
                                                    safe_load_checkpoint)
    path = str(tmp_path / 'x.pth')
    for seed in range(200):
        rng = random.Random(seed)
        blob = rng.randbytes(rng.randrange(1, 2048))
        if seed % 2:
            blob = b'\x80\x02' + blob  # pickle protocol 2 header
        with open(path, 'wb') as f:
            f.write(blob)
        with pytest.raises((CorruptCheckpointError, UnsafeCheckpointError), match='x.pth'):
            safe_load_checkpoint(path)
