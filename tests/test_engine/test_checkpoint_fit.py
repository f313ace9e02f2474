"""Issue 12: checkpoints are checked against the model they go into.

Through ``tools/train.py`` (``load_from``), ``tools/test.py``, mmdet's
``init_detector`` and ``tools/deployment/export_onnx.py``:

- a checkpoint of another architecture (the full r18 model into the small
  64-channel, 1-decoder-layer model) is refused, the differences grouped by
  module and the architecture facts that differ named; nothing is trained
  or exported; ``model.checkpoint_fit='off'`` loads what fits (opt-out);
- ``tools/test.py`` and the export refuse another number of classes (the
  training ``load_from`` path, which re-initialises the class layers, is
  ``test_checkpoint_reliability.py``'s); ``init_detector`` re-initialises
  them, like ``load_from``;
- a directory given as the checkpoint says so, with the converter's command
  and what the directory holds.

The checkpoints are saved state dicts of freshly built models: nothing is
trained.
"""
import glob
import re
import json
import os.path as osp

import pytest
import torch
from mmdet.registry import MODELS
from mmengine.config import Config

import rtdetr_mm  # noqa: F401
from rtdetr_mm.models.detectors.checkpoint_fit import CheckpointMismatchError
from rtdetr_mm.testing import ROOT
from rtdetr_mm.testing.tiny_coco import CLASSES, make_tiny_coco, tiny_config
from rtdetr_mm.testing.tools import load_tool

R18 = osp.join(ROOT, 'configs/rtdetrv2/rtdetrv2_r18vd_4xb4-120e_coco.py')

pytestmark = pytest.mark.timeout(300)


def _outcome(main, argv, capsys):
    """(status, message) of a tool's ``main(argv)``: a refusal returns 1 and
    prints ``error: <message>`` on stderr, without a traceback. (Earlier
    stderr is skipped: mmengine's logger may hold an earlier capture.)"""
    capsys.readouterr()
    status = main(argv)
    err = capsys.readouterr().err
    starts = [m.start() for m in re.finditer(r'^error: ', err, re.M)]
    message = err[starts[-1]:] if starts else err
    assert 'Traceback' not in message, message
    return status, message


def _save(model_cfg, path, classes):
    model = MODELS.build(model_cfg)
    torch.save(dict(state_dict=model.state_dict(),
                    meta=dict(dataset_meta=dict(classes=tuple(classes)))), path)
    return path


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    """The small-model config (2 classes) and checkpoints: ``r18`` (the
    full r18 model, 80 classes), ``three`` (the small model, 3 classes)."""
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    base = tmp_path_factory.mktemp('fit')
    data = make_tiny_coco(str(base / 'data'), num_images=2, size=(64, 64))
    config = tiny_config(str(base / 'cfg.py'), R18, data, size=(64, 64), max_epochs=1,
                         batch_size=2, small_model=True,
                         extra="default_hooks = dict(visualization=dict("
                               "type='DetVisualizationHook', draw=False))")
    small = Config.fromfile(config).model
    three = Config.fromfile(config).model
    three.bbox_head.num_classes = 3
    hf_dir = base / 'hf_model'
    hf_dir.mkdir()
    (hf_dir / 'config.json').write_text(json.dumps(dict(model_type='rt_detr_v2')))
    return dict(
        base=base, config=config,
        r18=_save(Config.fromfile(R18).model, str(base / 'r18.pth'),
                  [f'c{i}' for i in range(80)]),
        three=_save(three, str(base / 'three.pth'), CLASSES + ('triangle',)),
        small=small, hf_dir=str(hf_dir))


def _assert_architecture_report(message, ckpt):
    assert f'{ckpt} does not fit the model' in message, message
    # grouped by module, counts and keys with both shapes
    assert '  neck.input_proj: 15 of another shape (e.g. neck.input_proj.0.conv.weight: ' \
           'checkpoint [256, 128, 1, 1], model [64, 128, 1, 1]' in message, message
    assert '  bbox_head.decoder: ' in message and 'not in the model' in message, message
    # the checkpoint's architecture, as config keys
    assert 'neck.hidden_dim: checkpoint 256, model 64' in message, message
    assert 'bbox_head.num_layers: checkpoint 3, model 1' in message, message
    assert 'model.checkpoint_fit=off' in message, message


# ------------------------------------------------------ another architecture
def test_load_from_other_architecture_stops_training(setup, tmp_path, capsys):
    work = str(tmp_path / 'work')
    status, message = _outcome(load_tool('train').main, [
        setup['config'], '--work-dir', work, '--cfg-options', f"load_from={setup['r18']}"],
        capsys)
    assert status == 1
    _assert_architecture_report(message, setup['r18'])
    assert 'and the checkpoint has 80 classes, the model 2' in message, message
    assert not glob.glob(osp.join(work, '*.pth'))  # nothing trained


def test_init_detector_refuses_other_architecture_unless_off(setup):
    from mmdet.apis import init_detector
    with pytest.raises(CheckpointMismatchError) as info:
        init_detector(setup['config'], setup['r18'], device='cpu')
    _assert_architecture_report(str(info.value), setup['r18'])

    # the expert opt-out: what fits (the r18 backbone) loads, the rest keeps
    # its initialisation
    model = init_detector(setup['config'], setup['r18'], device='cpu',
                          cfg_options={'model.checkpoint_fit': 'off'})
    ckpt = torch.load(setup['r18'], weights_only=True)['state_dict']
    state = model.state_dict()
    assert all(torch.equal(state[k], ckpt[k]) for k in state if k.startswith('backbone.'))
    assert state['neck.input_proj.0.conv.weight'].shape[0] == 64


def test_test_py_refuses_other_num_classes(setup, tmp_path, capsys):
    """(Another architecture reaches test.py through the same loader as
    ``load_from``: the export's test below covers both.)"""
    out = str(tmp_path / 'results.pkl')
    status, message = _outcome(load_tool('test').main, [
        setup['config'], setup['three'], '--work-dir', str(tmp_path / 'work'), '--out', out],
        capsys)
    assert status == 1
    assert (f"{setup['three']} has 3 classes, the model 2 "
            '(model.bbox_head.num_classes=2)') in message, message
    assert 'model.bbox_head.num_classes=3' in message, message  # what would fit
    assert not osp.exists(out)


@pytest.mark.parametrize('ckpt', ['r18', 'three'])
def test_export_refuses_a_checkpoint_that_does_not_fit(setup, tmp_path, capsys, ckpt):
    out = str(tmp_path / 'model.onnx')
    status, message = _outcome(load_tool('deployment/export_onnx').main, [
        setup['config'], setup[ckpt], '--out', out, '--no-check'], capsys)
    assert status == 1
    if ckpt == 'r18':
        _assert_architecture_report(message, setup['r18'])
    else:
        assert (f"{setup['three']} has 3 classes, the model 2 "
                '(model.bbox_head.num_classes=2)') in message, message
    assert not osp.exists(out)


def test_init_detector_reinitialises_other_class_count(setup):
    """Fine-tuning's rule holds outside the runner too: only the class
    layers keep their initialisation; mmengine finds no missing key."""
    from mmdet.apis import init_detector
    model = init_detector(setup['config'], setup['three'], device='cpu')
    ckpt = torch.load(setup['three'], weights_only=True)['state_dict']
    for key, value in model.state_dict().items():
        if key.startswith(('bbox_head.enc_score_head.', 'bbox_head.dec_score_head.',
                           'bbox_head.denoising_class_embed.')):
            assert value.shape[0] == ckpt[key].shape[0] - 1, key
        else:
            assert torch.equal(value, ckpt[key]), key


# ------------------------------------------------- a directory as checkpoint
@pytest.mark.parametrize('entry', ['load_from', 'export'])
def test_directory_as_checkpoint_says_what_to_do(setup, tmp_path, capsys, entry):
    """(tools/test.py's checkpoint is its runner's ``load_from``.)"""
    directory = setup['hf_dir']
    if entry == 'load_from':
        main = load_tool('train').main
        argv = [setup['config'], '--work-dir', str(tmp_path / 'work'),
                '--cfg-options', f'load_from={directory}']
    else:
        main = load_tool('deployment/export_onnx').main
        argv = [setup['config'], directory, '--out', str(tmp_path / 'x.onnx'), '--no-check']
    status, message = _outcome(main, argv, capsys)
    assert status == 1
    assert f'{directory} is a directory, not a checkpoint file' in message, message
    assert (f'run tools/model_converters/rtdetrv2_to_mmdet.py {directory} {directory}.pth '
            '--config CONFIG') in message, message
    assert "It holds a Hugging Face config.json (model_type 'rt_detr_v2')" in message, message
    assert not glob.glob(str(tmp_path / '**' / '*.pth'), recursive=True)
    assert not osp.exists(tmp_path / 'x.onnx')
