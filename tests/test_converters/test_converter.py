"""Converter behaviour beyond parity: architecture checks, class-count
warnings, backbone checkpoints and refusing unknown input."""
import os.path as osp

import pytest
import torch

from rtdetr_mm.testing.checkout import run_python
from rtdetr_mm.testing.hf_reference import build_hf_model

from rtdetr_mm.testing import ROOT
TOOL = osp.join(ROOT, 'tools/model_converters/rtdetrv2_to_mmdet.py')
R18 = osp.join(ROOT, 'configs/rtdetrv2/rtdetrv2_r18vd_4xb4-120e_coco.py')
R34 = osp.join(ROOT, 'configs/rtdetrv2/rtdetrv2_r34vd_4xb4-120e_coco.py')


def _tool(*args):
    return run_python([TOOL, *args], timeout=300, check=False)


@pytest.fixture(scope='module')
def hf_r18(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('hf') / 'r18')
    build_hf_model('r18vd', seed=0).save_pretrained(path)
    return path


def test_architecture_mismatch_is_reported(hf_r18, tmp_path):
    proc = _tool(hf_r18, str(tmp_path / 'x.pth'), '--config', R34)
    assert proc.returncode == 1
    assert 'backbone.depth: checkpoint has 18, config has 34' in proc.stderr
    assert 'bbox_head.num_layers: checkpoint has 3, config has 4' in proc.stderr
    assert not osp.exists(tmp_path / 'x.pth')


def test_class_count_difference_warns_and_names_layers(hf_r18, tmp_path):
    cfg = tmp_path / 'r18_5cls.py'
    cfg.write_text(f"_base_ = {R18!r}\nmodel = dict(bbox_head=dict(num_classes=5))\n")
    proc = _tool(hf_r18, str(tmp_path / 'x.pth'), '--config', str(cfg))
    assert proc.returncode == 0, proc.stderr
    assert 'checkpoint has 80 classes, config has 5' in proc.stderr
    assert 'bbox_head.dec_score_head' in proc.stderr and 'denoising_class_embed' in proc.stderr
    ckpt = torch.load(tmp_path / 'x.pth', weights_only=True)
    assert len(ckpt['meta']['dataset_meta']['classes']) == 80


def test_backbone_checkpoint_loads_as_init_cfg(tmp_path):
    import rtdetr_mm  # noqa: F401
    from mmdet.registry import MODELS
    from rtdetr_mm.models.backbones import PResNet
    src_net = PResNet(depth=18)
    torch.save(src_net.state_dict(), tmp_path / 'imagenet_r18vd.pth')
    proc = _tool(str(tmp_path / 'imagenet_r18vd.pth'), str(tmp_path / 'bb.pth'))
    assert proc.returncode == 0, proc.stderr
    net = MODELS.build(dict(type='PResNet', depth=18, init_cfg=dict(
        type='Pretrained', checkpoint=str(tmp_path / 'bb.pth'))))
    net.init_weights()
    for (k, a), b in zip(src_net.state_dict().items(), net.state_dict().values()):
        assert torch.equal(a, b), k


def test_unknown_input_is_refused(tmp_path):
    torch.save({'foo': torch.zeros(1)}, tmp_path / 'bad.pth')
    proc = _tool(str(tmp_path / 'bad.pth'), str(tmp_path / 'x.pth'))
    assert proc.returncode == 1 and 'bad.pth: not an RT-DETRv2 checkpoint' in proc.stderr
    proc = _tool(str(tmp_path / 'missing_dir'), str(tmp_path / 'x.pth'))
    assert proc.returncode == 1 and 'no such file or directory' in proc.stderr


def _convert_in_process(capsys, *args):
    """The converter's ``main(argv)`` in this process: (status, stderr)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location('rtdetr_mm_tools_converter', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    status = module.main(list(args))
    return status, capsys.readouterr().err


@pytest.mark.parametrize('model_type,architecture,says', [
    ('rt_detr', 'RTDetrForObjectDetection', 'this is RT-DETR v1 (RTDetrForObjectDetection), '
                                            'which rtdetr_mm does not support'),
    ('detr', 'DetrForObjectDetection', 'this is not an RT-DETRv2 model'),
])
def test_other_hf_model_types_are_named(tmp_path, capsys, model_type, architecture, says):
    """A Hugging Face directory of another model: its model_type, what it
    is and what the converter supports, instead of a KeyError."""
    import json
    src = tmp_path / model_type
    src.mkdir()
    (src / 'config.json').write_text(json.dumps(dict(model_type=model_type,
                                                     architectures=[architecture])))
    status, err = _convert_in_process(capsys, str(src), str(tmp_path / 'x.pth'))
    assert status == 1
    assert f"{src / 'config.json'}: model_type {model_type!r} ({architecture}): {says}" in err, \
        err
    assert "Supported: a Hugging Face RT-DETRv2 directory (config.json with model_type " \
           "'rt_detr_v2'" in err, err
    assert not osp.exists(tmp_path / 'x.pth')


def test_official_v1_checkpoint_is_named(tmp_path, capsys):
    """An official RT-DETR v1 state dict: decoder layers without the
    ``num_points_scale`` buffer of every RT-DETRv2 decoder layer."""
    sd = {'backbone.conv1.conv1_1.conv.weight': torch.zeros(1),
          'decoder.enc_output.0.weight': torch.zeros(1),
          'decoder.decoder.layers.0.cross_attn.sampling_offsets.weight': torch.zeros(1)}
    torch.save({'ema': {'module': sd}}, tmp_path / 'rtdetr_r18vd_v1.pth')
    status, err = _convert_in_process(capsys, str(tmp_path / 'rtdetr_r18vd_v1.pth'),
                                      str(tmp_path / 'x.pth'))
    assert status == 1
    assert f"{tmp_path / 'rtdetr_r18vd_v1.pth'}: an official RT-DETR v1 checkpoint" in err, err
    assert 'which rtdetr_mm does not support' in err, err
    assert not osp.exists(tmp_path / 'x.pth')
