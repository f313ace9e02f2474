"""One walker over nested datasets and pipelines (rtdetr_mm/datasets/walk.py)
and what uses it: the ``image_size`` knob, the dataset validator and the
aug-switch hook reach datasets inside every wrapper and ``Resize`` steps
nested in ``RandomChoice`` / ``RandomApply``."""
import pytest
from mmengine.config import Config
from mmengine.dataset import BaseDataset, ConcatDataset, RepeatDataset

from rtdetr_mm.datasets.walk import (first_resize_scale, leaf_datasets, pipeline_owners,
                                     resize_steps, walk_datasets)
from rtdetr_mm.engine.runner.image_size import apply_image_size


def _nested_pipeline(scale):
    """A Resize two levels deep (RandomChoice -> RandomApply -> Resize) next
    to a top-level one."""
    return [
        dict(type='LoadImageFromFile'),
        dict(type='RandomChoice', transforms=[
            [dict(type='RandomApply', prob=0.5, transforms=[
                dict(type='Resize', scale=scale, keep_ratio=False)])],
            [dict(type='RandomFlip', prob=0.5)],
        ]),
        dict(type='Resize', scale=scale, keep_ratio=False),
        dict(type='PackDetInputs'),
    ]


def _config():
    leaf = dict(type='CocoDataset', ann_file='a.json', pipeline=_nested_pipeline((64, 64)))
    return Config(dict(
        image_size=(96, 128),
        train_dataloader=dict(dataset=dict(
            type='ConcatDataset', datasets=[
                leaf, dict(type='RepeatDataset', times=2,
                           dataset=dict(leaf, ann_file='b.json'))])),
        val_dataloader=dict(dataset=dict(leaf, ann_file='c.json')),
        test_dataloader=dict(dataset=dict(leaf, ann_file='d.json'))))


def test_walk_datasets_keys_leaves_and_pipelines():
    cfg = _config()
    nodes = list(walk_datasets(cfg.train_dataloader.dataset, 'train_dataloader.dataset'))
    assert [(n.key, n.is_leaf) for n in nodes] == [
        ('train_dataloader.dataset', False),
        ('train_dataloader.dataset.datasets.0', True),
        ('train_dataloader.dataset.datasets.1', False),
        ('train_dataloader.dataset.datasets.1.dataset', True)]
    assert [n.dataset['ann_file'] for n in leaf_datasets(cfg.train_dataloader.dataset)] == \
        ['a.json', 'b.json']
    assert all(len(n.pipelines) == 1 for n in nodes if n.is_leaf)


def test_walk_transforms_reaches_nested_resize():
    steps = resize_steps(_nested_pipeline((64, 64)), 'p')
    assert [where for where, _ in steps] == ['p.1.transforms.0.0.transforms.0', 'p.2']
    # mmcv's scale is (w, h)
    assert first_resize_scale([_nested_pipeline((64, 32))]) == (32, 64, False)
    assert first_resize_scale([[dict(type='RandomFlip')]]) is None


@pytest.mark.parametrize('loader', ['train_dataloader', 'val_dataloader', 'test_dataloader'])
def test_image_size_reaches_nested_resize_in_every_loader(loader):
    """image_size (h, w) = (96, 128) becomes scale (w, h) = (128, 96) in
    every Resize, nested two levels deep and inside dataset wrappers."""
    cfg = _config()
    assert apply_image_size(cfg) == (96, 128)
    found = [step for node in walk_datasets(cfg[loader].dataset)
             for pipeline in node.pipelines for _, step in resize_steps(pipeline)]
    assert len(found) >= 2
    assert all(tuple(step['scale']) == (128, 96) for step in found), found


def test_pipeline_owners_of_built_wrappers():
    """The aug-switch hook replaces the pipeline of the datasets that own
    one, through built ConcatDataset and RepeatDataset."""
    a, b = BaseDataset(lazy_init=True), BaseDataset(lazy_init=True)
    concat = ConcatDataset([a, b], lazy_init=True)
    assert pipeline_owners(concat) == [a, b]
    assert [n.dataset for n in leaf_datasets(concat)] == [a, b]
    repeat = RepeatDataset(b, times=2, lazy_init=True)
    assert pipeline_owners(repeat) == [b]
    assert [n.dataset for n in leaf_datasets(repeat)] == [b]
    with pytest.raises(TypeError, match='no pipeline'):
        pipeline_owners(object())


def test_onnx_input_size_follows_the_config(tmp_path):
    """The export's default input size is the test pipeline's Resize after
    the image_size knob; a bad size names the key."""
    from rtdetr_mm.testing.model_utils import R18

    from rtdetr_mm.deployment.onnx_export import config_input_size, export_onnx
    child = tmp_path / 'child.py'
    child.write_text(f'_base_ = {R18!r}\nimage_size = (96, 128)\n')
    assert config_input_size(str(R18)) == (640, 640)
    assert config_input_size(str(child)) == (96, 128)
    with pytest.raises(ValueError, match=r'input_size=\(100, 128\).*multiple of 32'):
        export_onnx(None, str(tmp_path / 'x.onnx'), (100, 128))


@pytest.mark.parametrize('where', ['default_hooks', 'custom_hooks'])
def test_image_size_reaches_the_aug_switch_pipeline(where):
    """The aug-switch hook's switch_pipeline follows image_size, as a named
    default hook (the configs' place: default_hooks.aug_switch) and in
    custom_hooks (where a user may put it); other hooks are left alone."""
    cfg = _config()
    hook = dict(type='RTDETRv2AugSwitchHook', stop_epochs_before_end=1,
                switch_pipeline=_nested_pipeline((64, 64)))
    other = dict(type='RTDETRv2EMAHook', switch_pipeline=_nested_pipeline((64, 64)))
    if where == 'default_hooks':
        cfg.default_hooks = dict(aug_switch=hook, ema=other)
    else:
        cfg.custom_hooks = [other, hook]
    apply_image_size(cfg)
    hooks = (list(cfg.default_hooks.values()) if where == 'default_hooks'
             else cfg.custom_hooks)
    scales = {h['type']: [tuple(s['scale']) for _, s in resize_steps(h['switch_pipeline'])]
              for h in hooks}
    assert scales['RTDETRv2AugSwitchHook'] == [(128, 96), (128, 96)]
    assert scales['RTDETRv2EMAHook'] == [(64, 64), (64, 64)]
