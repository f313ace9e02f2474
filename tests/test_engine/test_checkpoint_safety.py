"""mmengine checkpoints load with ``weights_only=True``; pickled code does not.

A tiny mmdet detector (RetinaNet on a ResNet-18 with 8 base channels, no
pretrained weights) is trained for 2 iterations on a 2-image synthetic COCO
set with the real mmengine Runner, including the parts of an RT-DETRv2 run
that put state into a checkpoint: EMAHook, parameter schedulers, AdamW with
per-key lr multipliers, validation with CocoMetric and ``save_best``.
"""
import os
import os.path as osp

import numpy as np
import pytest
import torch
from rtdetr_mm.testing.tiny_mmdet import make_coco, tiny_cfg

import rtdetr_mm  # noqa: F401  (registers the allow-list)
from rtdetr_mm.engine.checkpoint_safety import (safe_global_names,
                                                safe_load_checkpoint)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """(data_root, work_dir, checkpoint) after 1 epoch = 2 iterations."""
    from mmengine.runner import Runner
    base = tmp_path_factory.mktemp('ckpt_safety')
    data_root = str(base / 'data')
    make_coco(data_root)
    work_dir = str(base / 'run1')
    runner = Runner.from_cfg(tiny_cfg(data_root, work_dir, max_epochs=1))
    runner.train()
    assert runner.iter == 2
    ckpt = osp.join(work_dir, 'epoch_1.pth')
    assert osp.isfile(ckpt)
    return data_root, work_dir, ckpt


_IMPORT_EVERYTHING = r"""
import glob, importlib, json, os, os.path as osp, pkgutil, runpy, sys
root, config, work, evil = sys.argv[1:5]
assert not any(k.startswith('TORCH_FORCE') for k in os.environ)
import rtdetr_mm
modules = [m.name for m in pkgutil.walk_packages(rtdetr_mm.__path__, 'rtdetr_mm.')]
for name in modules:
    importlib.import_module(name)
tools = sorted(glob.glob(osp.join(root, 'tools', '**', '*.py'), recursive=True))
namespaces = {osp.relpath(p, root): runpy.run_path(p, run_name='not_main') for p in tools}
train, test = namespaces['tools/train.py'], namespaces['tools/test.py']
from mmengine.registry import RUNNERS
cfg = train['build_cfg'](train['parse_args']([config, '--work-dir', work]))
RUNNERS.build(cfg)  # the runner type of the config, model and hooks built
test['build_cfg'](test['parse_args']([config, evil, '--work-dir', work]))
forced = sorted(k for k in os.environ if k.startswith('TORCH_FORCE'))

import torch
from mmengine.runner import CheckpointLoader, load_checkpoint
loads = {
    'load_checkpoint': lambda: load_checkpoint(torch.nn.Linear(1, 1), evil, map_location='cpu'),
    'CheckpointLoader': lambda: CheckpointLoader.load_checkpoint(evil, map_location='cpu'),
    # as mmengine itself calls it elsewhere: no weights_only argument
    'torch.load': lambda: torch.load(evil, map_location='cpu'),
}
refused = {}
for name, load in loads.items():
    try:
        load()
        refused[name] = None
    except Exception as err:
        refused[name] = f'{type(err).__name__}: {err}'
print(json.dumps(dict(modules=modules, tools=sorted(namespaces), forced=forced,
                      refused=refused)))
"""


def _config_and_payload(tmp_path, checkpoint):
    """(checkout root, a tiny r18 config, the file the payload would create,
    a checkpoint ``checkpoint`` plus an entry that pickles os.system)."""
    from rtdetr_mm.testing.tiny_coco import make_tiny_coco, tiny_config
    from rtdetr_mm.testing import ROOT as root
    data = make_tiny_coco(str(tmp_path / 'data'), num_images=2, size=(64, 64))
    config = tiny_config(
        str(tmp_path / 'cfg.py'),
        osp.join(root, 'configs/rtdetrv2/rtdetrv2_r18vd_4xb4-120e_coco.py'), data,
        size=(64, 64), max_epochs=1, batch_size=2, small_model=True)
    marker = tmp_path / 'pwned'
    evil = str(tmp_path / 'evil.pth')
    torch.save(dict(checkpoint, x=_RunsCommand(marker)), evil)
    return root, config, marker, evil


def test_importing_everything_leaves_weights_only_on(tmp_path):
    """In a fresh process without any TORCH_FORCE* variable: import rtdetr_mm
    and every submodule, every tools/ script (as a module) and run the
    tools' config loading and runner building; afterwards no TORCH_FORCE*
    variable was set and a checkpoint that pickles os.system is still refused
    by mmengine's loaders and by a plain ``torch.load`` (whose default
    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD would turn into unrestricted unpickling);
    the payload never ran."""
    import json
    import subprocess
    import sys

    from rtdetr_mm.testing.checkout import checkout_env
    root, config, marker, evil = _config_and_payload(tmp_path, {'state_dict': {}})
    proc = subprocess.run(
        [sys.executable, '-c', _IMPORT_EVERYTHING, root, config, str(tmp_path / 'work'), evil],
        cwd=root, env=checkout_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    # it did reach everything
    assert {'rtdetr_mm.engine.checkpoint_safety', 'rtdetr_mm.engine.hooks.nonfinite_hook',
            'rtdetr_mm.models.dense_heads.rtdetrv2_head'} <= set(report['modules'])
    assert {'tools/train.py', 'tools/test.py',
            'tools/model_converters/rtdetrv2_to_mmdet.py'} <= set(report['tools'])
    assert report['forced'] == []
    for name, error in report['refused'].items():
        assert error is not None, f'{name} loaded a pickled os.system'
    for name in ('load_checkpoint', 'CheckpointLoader'):
        assert 'refusing to unpickle' in report['refused'][name], report['refused'][name]
        assert evil in report['refused'][name]
    assert 'UnpicklingError' in report['refused']['torch.load']
    assert not marker.exists()


def _torch_force_settings(tree):
    """Nodes of ``tree`` that set a TORCH_FORCE* variable: ``env[NAME] = ...``
    (``del`` too), a dict key NAME, ``NAME=`` as a keyword, or NAME as the
    first argument of ``setdefault`` / ``putenv`` / ``__setitem__``. Reading
    or filtering out such names (``k.startswith('TORCH_FORCE')``) is fine."""
    import ast

    def forced(node):
        return isinstance(node, ast.Constant) and isinstance(node.value, str) \
            and 'TORCH_FORCE' in node.value

    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, (ast.Store, ast.Del)) \
                and forced(node.slice):
            yield node
        elif isinstance(node, ast.Dict) and any(forced(key) for key in node.keys):
            yield node
        elif isinstance(node, ast.Call):
            if any(k.arg and k.arg.startswith('TORCH_FORCE') for k in node.keywords):
                yield node
            elif isinstance(node.func, (ast.Attribute, ast.Name)) and node.args \
                    and getattr(node.func, 'attr', getattr(node.func, 'id', None)) in (
                        'setdefault', 'putenv', '__setitem__') and forced(node.args[0]):
                yield node


def test_source_never_disables_weights_only():
    """Static scan of rtdetr_mm/ and tools/ (and the Makefile and CI
    script): no ``weights_only=`` other than a literal True, no code that
    sets a TORCH_FORCE* variable, no shell line that sets one."""
    import ast
    import glob
    import re
    from rtdetr_mm.testing import ROOT as root
    python_files = sorted(
        glob.glob(osp.join(root, 'rtdetr_mm', '**', '*.py'), recursive=True)
        + glob.glob(osp.join(root, 'tools', '**', '*.py'), recursive=True))
    assert len(python_files) > 30
    found = []
    for path in python_files:
        with open(path) as f:
            tree = ast.parse(f.read(), path)
        where = osp.relpath(path, root)
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg == 'weights_only' and not (
                    isinstance(node.value, ast.Constant) and node.value.value is True):
                found.append(f'{where}:{node.value.lineno}: weights_only={ast.unparse(node.value)}')
        for node in _torch_force_settings(tree):
            found.append(f'{where}:{node.lineno}: {ast.unparse(node)}')
    other_files = [p for p in glob.glob(osp.join(root, 'tools', '**', '*'), recursive=True)
                   if osp.isfile(p) and not p.endswith(('.py', '.pyc'))]
    other_files += [osp.join(root, 'Makefile'), osp.join(root, '.ci', 'run')]
    for path in other_files:
        with open(path, errors='replace') as f:
            for lineno, line in enumerate(f, 1):
                if re.search(r'TORCH_FORCE\w*=', line.split('#')[0]):
                    found.append(f'{osp.relpath(path, root)}:{lineno}: {line.strip()}')
    assert found == [], found

    # the scan sees what it looks for
    samples = ["os.environ['TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'] = '1'",
               "os.environ.setdefault('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')",
               "subprocess.run(cmd, env={'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD': '1'})",
               "env.update(TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD='1')"]
    assert all(list(_torch_force_settings(ast.parse(code))) for code in samples)
    assert not list(_torch_force_settings(ast.parse(
        "env = {k: v for k, v in os.environ.items() if not k.startswith('TORCH_FORCE')}")))


def test_runner_checkpoint_loads_weights_only(trained):
    _, _, ckpt = trained
    assert not any(k.startswith('TORCH_FORCE') for k in os.environ)
    # Every global in the checkpoint beyond torch's defaults is one we
    # allow-list (listed with our allow-list taken out for a moment) ...
    ours = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    try:
        needed = set(
            torch.serialization.get_unsafe_globals_in_checkpoint(ckpt))
    finally:
        torch.serialization.add_safe_globals(ours)
    print('globals beyond torch defaults:', sorted(needed))
    assert needed <= set(safe_global_names()), needed - set(
        safe_global_names())
    assert 'mmengine.logging.history_buffer.HistoryBuffer' in needed
    # ... and plain torch.load with weights_only=True reads all of it.
    checkpoint = torch.load(ckpt, map_location='cpu', weights_only=True)
    assert {'meta', 'state_dict', 'message_hub', 'optimizer',
            'param_schedulers', 'ema_state_dict'} <= set(checkpoint)
    assert checkpoint['meta']['iter'] == 2
    assert isinstance(checkpoint['meta']['cfg'], str)
    from mmengine.logging import HistoryBuffer
    scalars = checkpoint['message_hub']['log_scalars']
    assert isinstance(scalars['train/loss'], HistoryBuffer)
    assert len(scalars['train/loss'].data[0]) == 2
    assert 'best_score' in checkpoint['message_hub']['runtime_info']


def test_resume_continues_iterations(trained, tmp_path):
    from mmengine.runner import Runner
    data_root, _, ckpt = trained
    work_dir = str(tmp_path / 'run2')
    cfg = tiny_cfg(data_root, work_dir, max_epochs=2)
    cfg.resume = True
    cfg.load_from = ckpt
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.epoch == 2
    assert runner.iter == 4
    resumed = safe_load_checkpoint(osp.join(work_dir, 'epoch_2.pth'))
    assert resumed['meta']['iter'] == 4
    # history from the first run is carried over, not restarted
    loss_history = resumed['message_hub']['log_scalars']['train/loss']
    assert len(loss_history.data[0]) == 4
    steps = {int(s['step']) for s in resumed['optimizer']['state'].values()}
    assert steps == {4}


class _RunsCommand:
    """Unpickles to ``os.system('touch <marker>')``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}', ))


class _ReadsAttribute:
    """Unpickles to ``getattr(HistoryBuffer, 'update')`` (not a statistic)."""

    def __reduce__(self):
        from mmengine.logging import HistoryBuffer
        return (getattr, (HistoryBuffer, 'update'))


@pytest.mark.parametrize('payload,global_name', [
    (lambda marker: os.system, 'system'),
    (lambda marker: _RunsCommand(marker), 'system'),
    (lambda marker: eval, 'builtins.eval'),
    (lambda marker: _ReadsAttribute(), 'builtins.getattr'),
])
def test_malicious_checkpoint_refused(tmp_path, payload, global_name):
    from mmengine.runner import load_checkpoint
    marker = tmp_path / 'pwned'
    path = str(tmp_path / 'evil.pth')
    torch.save({'state_dict': {}, 'x': payload(marker)}, path)

    with pytest.raises(RuntimeError) as info:
        safe_load_checkpoint(path)
    message = str(info.value)
    assert message.startswith('refusing to unpickle')
    assert path in message and global_name in message

    with pytest.raises(RuntimeError) as info:
        load_checkpoint(torch.nn.Linear(1, 1), path, map_location='cpu')
    message = str(info.value)
    assert message.startswith('refusing to unpickle')
    assert path in message and global_name in message
    assert 'weights_only=False' not in message
    assert not marker.exists()


def test_corrupt_file_is_not_reported_as_refusal(tmp_path):
    path = tmp_path / 'broken.pth'
    path.write_bytes(b'not a checkpoint')
    with pytest.raises(RuntimeError) as info:
        safe_load_checkpoint(str(path))
    message = str(info.value)
    assert 'refusing to unpickle' not in message
    assert str(path) in message and 'weights_only=False' not in message


def test_plain_pickle_of_callable_is_refused(tmp_path):
    # a legacy (non-zip) torch file goes through the same restricted unpickler
    path = str(tmp_path / 'legacy.pth')
    torch.save({'x': os.system}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(RuntimeError, match='refusing to unpickle'):
        safe_load_checkpoint(path)
    with open(path, 'rb') as f:  # sanity: it really is a pickled callable
        assert b'system' in f.read()


def test_numpy1_spelling_loads(tmp_path):
    # checkpoints written under numpy 1 say numpy.core.multiarray.*
    import io
    from mmengine.logging import HistoryBuffer
    buffer = io.BytesIO()
    torch.save({'hb': HistoryBuffer([1.5], [1]), 'eta': np.float64(2.0)},
               buffer, _use_new_zipfile_serialization=False)
    data = buffer.getvalue()
    assert b'numpy._core.multiarray' in data
    path = tmp_path / 'numpy1.pth'
    path.write_bytes(
        data.replace(b'numpy._core.multiarray', b'numpy.core.multiarray'))
    loaded = safe_load_checkpoint(str(path))
    assert loaded['eta'] == 2.0
    assert loaded['hb'].current() == 1.5


def test_url_loaders_are_restricted(trained, tmp_path):
    """mmengine's http(s) / open-mmlab / torchvision / mmcls loaders go
    through torch.hub.load_state_dict_from_url (weights_only=False by
    default); importing rtdetr_mm registers ours for those schemes, which
    pass weights_only=True. file:// stands in for https."""
    from mmengine.runner import checkpoint as mmengine_checkpoint
    from mmengine.runner.checkpoint import CheckpointLoader

    from rtdetr_mm.engine import checkpoint_loaders
    for url in ('https://host/a.pth', 'http://host/a.pth', 'torchvision://resnet50',
                'open-mmlab://resnet50_v1c', 'mmcls://resnet50', ''):
        # (mmengine has no public lookup of the loader for a prefix)
        loader = CheckpointLoader._get_checkpoint_loader(url)
        assert loader.__module__ == checkpoint_loaders.__name__, (url, loader)
    # mmengine's own module is untouched (its load_url is torch.hub's)
    import torch.hub
    assert mmengine_checkpoint.load_url is torch.hub.load_state_dict_from_url

    _, _, ckpt = trained
    good = checkpoint_loaders.load_from_http('file://' + ckpt, model_dir=str(tmp_path / 'good'))
    assert good['meta']['iter'] == 2

    marker = tmp_path / 'pwned'
    evil = str(tmp_path / 'evil.pth')
    torch.save({'state_dict': {}, 'x': _RunsCommand(marker)}, evil)
    with pytest.raises(RuntimeError, match='refusing to unpickle') as info:
        checkpoint_loaders.load_from_http('file://' + evil, model_dir=str(tmp_path / 'evil'))
    assert 'file://' + evil in str(info.value)
    assert not marker.exists()


# ------------------------------------------------ every command-line entry point
def test_pickled_callable_refused_by_every_entry_point(tmp_path):
    """``load_from`` and ``--resume`` of tools/train.py, tools/test.py and the
    converter, each in its own process with no TORCH_FORCE* variable: exit
    code != 0, the message names the file and the global, the payload never
    ran. The four processes run side by side, each with a hard timeout."""
    from rtdetr_mm.testing.checkout import popen_python
    root, config, marker, evil = _config_and_payload(
        tmp_path, {'meta': {'epoch': 0, 'iter': 0}, 'state_dict': {}})
    work = str(tmp_path / 'work')
    commands = {
        'train load_from': ['tools/train.py', config, '--work-dir', work + '1',
                            '--cfg-options', f'load_from={evil}'],
        'train --resume': ['tools/train.py', config, '--work-dir', work + '2', '--resume',
                           evil],
        'test': ['tools/test.py', config, evil, '--work-dir', work + '3'],
        'converter': ['tools/model_converters/rtdetrv2_to_mmdet.py', evil,
                      str(tmp_path / 'converted.pth')],
    }
    procs = {name: popen_python(args) for name, args in commands.items()}
    outputs = {}
    try:
        for name, proc in procs.items():
            outputs[name] = (proc.communicate(timeout=240)[0], proc.returncode)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    for name, (out, returncode) in outputs.items():
        assert returncode != 0, f'{name} exited 0:\n{out[-3000:]}'
        assert f'refusing to unpickle posix.system from {evil}' in out or \
            f'refusing to unpickle os.system from {evil}' in out, f'{name}:\n{out[-3000:]}'
        assert 'weights_only=False' not in out, name
    assert not marker.exists()
