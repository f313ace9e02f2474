"""The annotation validator (rtdetr_mm/datasets/validation/) and
RTDETRv2CocoDataset on small crafted bad datasets: one test per problem."""
import json
import logging
import os
import os.path as osp
import re

import mmcv
import numpy as np
import pytest
import torch
from mmdet.registry import DATASETS, HOOKS, TRANSFORMS
from mmengine.config import Config
from mmengine.logging import MMLogger

from mmengine.hooks import Hook
from mmengine.registry import RUNNERS

from rtdetr_mm.datasets import (DatasetPipelineError, DatasetValidationError, ImageLoadError,
                                check_config_datasets, config_dataset_facts, validate_coco)
from rtdetr_mm.datasets.validation import (InputSize, ModelFacts, config_model_facts,
                                          sanitize_box)
# imported by module path: rtdetr_mm.engine.hooks may not export it yet
from rtdetr_mm.engine.hooks.dataset_check_hook import RTDETRv2DatasetCheckHook  # noqa: F401
from rtdetr_mm.engine.cli import load_config
from rtdetr_mm.testing.tiny_coco import coco_ann as _ann, coco_image as _image
from rtdetr_mm.testing.tiny_coco import good_coco, tiny_config, write_coco

pytestmark = pytest.mark.timeout(60)

from rtdetr_mm.testing import ROOT
R18 = osp.join(ROOT, 'configs/rtdetrv2/rtdetrv2_r18vd_4xb4-120e_coco.py')
CLASSES = ('square', 'disk')
PIPELINE = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True),
            dict(type='PackDetInputs')]


def build_dataset(ann_file, img_dir, classes=CLASSES, **kw):
    cfg = dict(type='RTDETRv2CocoDataset', ann_file=ann_file, data_prefix=dict(img=img_dir),
               metainfo=dict(classes=classes), filter_cfg=dict(filter_empty_gt=False),
               pipeline=kw.pop('pipeline', PIPELINE))
    cfg.update(kw)
    return DATASETS.build(cfg)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture
def mm_log():
    """Messages sent to mmengine's current logger during the test."""
    logger = MMLogger.get_current_instance()
    handler = _Records()
    logger.addHandler(handler)
    yield handler.lines
    logger.removeHandler(handler)


def error_text(report):
    return '\n'.join(f.message for f in report.errors)


# ---------------------------------------------------------------- errors
def test_good_dataset_has_no_errors_and_labels_by_name(tmp_path):
    ann_file, img_dir = good_coco(tmp_path)
    report, coco = validate_coco(ann_file, CLASSES, img_dir)
    assert report.ok and not report.warnings, report.findings
    assert coco['images'][0]['id'] == 1
    ds = build_dataset(ann_file, img_dir)
    assert len(ds) == 3
    assert [i['bbox_label'] for i in ds.get_data_info(0)['instances']] == [0, 1]


def test_malformed_json_names_file_and_position(tmp_path):
    text = '{"images": [1, 2,,]}'  # the second comma is char 17: line 1, column 18
    ann_file, img_dir = write_coco(tmp_path, [], [], raw=text)
    report, coco = validate_coco(ann_file, CLASSES, img_dir)
    assert coco is None and report.codes('error') == ['malformed_json']
    assert ann_file in error_text(report)
    assert 'line 1 column 18 (char 17)' in error_text(report)
    with pytest.raises(DatasetValidationError, match='line 1 column 18') as exc:
        build_dataset(ann_file, img_dir)
    assert ann_file in str(exc.value)


def test_missing_top_level_key(tmp_path):
    ann_file, img_dir = write_coco(tmp_path, [], [], raw=json.dumps(dict(images=[], categories=[])))
    report, _ = validate_coco(ann_file, CLASSES, img_dir)
    assert report.codes('error') == ['missing_key']
    assert "'annotations'" in error_text(report) and ann_file in error_text(report)
    # evaluation json without annotations (test-dev style) is fine
    report, _ = validate_coco(ann_file, CLASSES, img_dir, test_mode=True)
    assert 'missing_key' not in report.codes()


def test_unknown_image_and_category_ids_name_the_annotation(tmp_path):
    anns = [_ann(7, 1, 1, [1, 1, 5, 5]), _ann(8, 99, 1, [1, 1, 5, 5]), _ann(9, 1, 5, [1, 1, 5, 5])]
    ann_file, img_dir = write_coco(tmp_path, [_image(1)], anns)
    report, _ = validate_coco(ann_file, CLASSES, img_dir)
    assert sorted(report.codes('error')) == ['unknown_category_id', 'unknown_image_id']
    assert 'annotation id 8 -> image_id 99' in error_text(report)
    assert 'annotation id 9 -> category_id 5' in error_text(report)
    with pytest.raises(DatasetValidationError, match='annotation id 8 -> image_id 99'):
        build_dataset(ann_file, img_dir)


def test_duplicate_ids(tmp_path):
    anns = [_ann(4, 1, 1, [1, 1, 5, 5]), _ann(4, 1, 2, [1, 1, 5, 5])]
    ann_file, img_dir = write_coco(tmp_path, [_image(1), _image(1)], anns)
    report, _ = validate_coco(ann_file, CLASSES, img_dir)
    assert sorted(report.codes('error')) == ['duplicate_annotation_id', 'duplicate_image_id']
    assert 'annotation id 4' in error_text(report) and 'image id 1' in error_text(report)


def test_missing_image_file_names_path_and_image_id(tmp_path):
    ann_file, img_dir = good_coco(tmp_path)
    missing = osp.join(img_dir, '002.png')
    os.remove(missing)
    report, _ = validate_coco(ann_file, CLASSES, img_dir)
    assert report.codes('error') == ['missing_image_file']
    assert f'{missing!r} (image id 2)' in error_text(report)
    with pytest.raises(DatasetValidationError, match=r"002\.png' \(image id 2\)"):
        build_dataset(ann_file, img_dir)


def test_category_names_differ_from_classes(tmp_path):
    cats = [dict(id=1, name='square'), dict(id=2, name='Disk'), dict(id=3, name='cone')]
    anns = [_ann(1, 1, 1, [1, 1, 5, 5]), _ann(2, 1, 2, [1, 1, 5, 5]), _ann(3, 1, 3, [1, 1, 5, 5]),
            _ann(4, 1, 3, [1, 1, 5, 5])]
    ann_file, img_dir = write_coco(tmp_path, [_image(1)], anns, cats)
    report, _ = validate_coco(ann_file, CLASSES, img_dir)
    assert sorted(report.codes('error')) == ['class_name_mismatch', 'extra_categories']
    text = error_text(report)
    assert "missing from the categories of" in text and "['disk']" in text
    assert "'disk' vs json 'Disk'" in text              # spelling hint
    assert "{'Disk': 1, 'cone': 2}" in text             # extra names: annotation counts
    with pytest.raises(DatasetValidationError, match='metainfo.classes names missing'):
        build_dataset(ann_file, img_dir)


def test_extra_categories_allowed_for_a_subset(tmp_path):
    cats = [dict(id=1, name='square'), dict(id=2, name='disk'), dict(id=3, name='cone')]
    anns = [_ann(1, 1, 1, [1, 1, 5, 5]), _ann(2, 1, 3, [1, 1, 5, 5]), _ann(3, 1, 2, [2, 2, 5, 5])]
    ann_file, img_dir = write_coco(tmp_path, [_image(1)], anns, cats)
    ds = build_dataset(ann_file, img_dir, allow_extra_categories=True)
    assert ds.validation_report.codes('warning') == ['extra_categories']
    assert [i['bbox_label'] for i in ds.get_data_info(0)['instances']] == [0, 1]


def test_classes_given_as_a_string(tmp_path):
    ann_file, img_dir = good_coco(tmp_path)
    report, _ = validate_coco(ann_file, 'square', img_dir)
    assert report.codes('error') == ['classes_is_string']
    assert "metainfo.classes=('square',)" in error_text(report)
    with pytest.raises(DatasetValidationError,
                       match=r"metainfo.classes is the string 'square'.*\('square',\)"):
        build_dataset(ann_file, img_dir, classes='square')


def _config(ann_file, img_dir, classes=CLASSES, num_classes=2, wrap=None):
    dataset = dict(type='RTDETRv2CocoDataset', ann_file=ann_file, data_prefix=dict(img=img_dir),
                   metainfo=dict(classes=classes), pipeline=[
                       dict(type='LoadImageFromFile'),
                       dict(type='Resize', scale=(64, 32), keep_ratio=False)])
    if wrap == 'repeat':
        dataset = dict(type='RepeatDataset', times=2, dataset=dataset)
    elif wrap == 'concat':
        dataset = dict(type='ConcatDataset', datasets=[dataset, dict(dataset, ann_file='x.json')])
    return Config(dict(
        model=dict(type='RTDETRv2', bbox_head=dict(num_classes=num_classes, num_queries=10,
                                                   dn_cfg=dict(num_denoising=4))),
        train_dataloader=dict(dataset=dataset),
        val_dataloader=dict(dataset=dict(dataset if wrap is None else dataset, test_mode=True))))


def test_num_classes_disagrees_with_classes(tmp_path):
    ann_file, img_dir = good_coco(tmp_path)
    cfg = _config(ann_file, img_dir, num_classes=80)
    with pytest.raises(DatasetValidationError) as exc:
        check_config_datasets(cfg)
    msg = str(exc.value)
    assert 'model.bbox_head.num_classes=80' in msg and 'has 2 names' in msg
    assert 'train_dataloader.dataset' in msg
    results = check_config_datasets(_config(ann_file, img_dir, num_classes=2))
    assert [(f.split, f.test_mode, r.ok) for f, r in results] == [('train', False, True),
                                                                  ('val', True, True)]


def test_config_facts_through_wrappers(tmp_path):
    ann_file, img_dir = good_coco(tmp_path)
    facts = config_dataset_facts(_config(ann_file, img_dir, wrap='repeat'), ['train'])
    assert [f.key for f in facts] == ['train_dataloader.dataset.dataset']
    # mmdet's Resize scale is (w, h) = (64, 32): input h=32, w=64
    assert facts[0].input_size == InputSize(h=32, w=64, keep_ratio=False)
    assert facts[0].ann_file == ann_file and facts[0].classes == CLASSES
    facts = config_dataset_facts(_config(ann_file, img_dir, wrap='concat'), ['train'])
    # keys as --cfg-options spells them
    assert [f.key for f in facts] == ['train_dataloader.dataset.datasets.0',
                                      'train_dataloader.dataset.datasets.1']
    assert facts[1].ann_file == 'x.json'


def test_config_model_facts_read_the_head_and_its_dn_cfg(tmp_path):
    """The budgets the checks compare against, with the keys they name."""
    ann_file, img_dir = good_coco(tmp_path)
    facts = config_model_facts(_config(ann_file, img_dir))
    assert (facts.num_classes, facts.num_queries, facts.num_denoising) == (2, 10, 4)
    assert facts.num_denoising_key == 'model.bbox_head.dn_cfg.num_denoising'
    assert facts.num_queries_key == 'model.bbox_head.num_queries'


# ---------------------------------------------------------------- boxes
# 100x100 image; COCO [x, y, w, h] -> expected fix and clipped xyxy
BOXES = [
    ([10, 10, 20, 20], None, [10, 10, 30, 30]),
    ([90, 80, 20, 10], 'clipped', [90, 80, 100, 90]),
    ([-5, 10, 10, 10], 'clipped', [0, 10, 5, 20]),
    ([-10, -10, 130, 120], 'clipped', [0, 0, 100, 100]),
    ([0, 0, 0, 10], 'zero_area', None),
    ([5, 5, 10, 0], 'zero_area', None),
    ([5, 5, -3, 4], 'negative_size', None),
    ([150, 150, 10, 10], 'outside_image', None),
    ([-20, 5, 20, 5], 'outside_image', None),   # touches the left edge only
    ([99.5, 10, 10, 10], 'too_small', None),    # 0.5 px wide after clipping
]


def test_sanitize_box_hand_computed():
    for bbox, reason, xyxy in BOXES:
        assert sanitize_box(bbox, 100, 100) == (xyxy, reason), bbox


def test_bad_boxes_clipped_or_dropped_with_counts_logged(tmp_path, mm_log):
    anns = [_ann(i + 1, 1, 1, bbox) for i, (bbox, _, _) in enumerate(BOXES)]
    ann_file, img_dir = write_coco(tmp_path, [_image(1), _image(2)], anns)
    report, _ = validate_coco(ann_file, CLASSES, img_dir)
    assert report.ok
    # hand count of BOXES: 3 clipped; dropped: 2 zero, 1 negative, 2 outside, 1 < 1 px
    assert report.fixes.counts == dict(clipped=3, negative_size=1, zero_area=2,
                                       outside_image=2, too_small=1)
    assert report.stats.num_boxes == 4
    ds = build_dataset(ann_file, img_dir)
    log = '\n'.join(mm_log)
    assert ('3 clipped to the image, 6 dropped (negative-size 1, zero-area 2, '
            'outside-image 2, too-small 1)') in log
    got = [i['bbox'] for i in ds.get_data_info(0)['instances']]
    assert got == [xyxy for _, _, xyxy in BOXES if xyxy is not None]
    # the loaded sample holds the same boxes (LoadAnnotations + PackDetInputs)
    sample = ds[0]['data_samples'].gt_instances.bboxes.tensor.numpy()
    np.testing.assert_allclose(sample, np.array(got, np.float32))


def test_malformed_bbox_is_an_error(tmp_path):
    anns = [_ann(3, 1, 1, [1, 2, 3]), _ann(4, 1, 1, [1, 2, float('nan'), 3])]
    text = json.dumps(dict(images=[_image(1)], annotations=anns,
                           categories=[dict(id=1, name='square'), dict(id=2, name='disk')]))
    ann_file, img_dir = write_coco(tmp_path, [_image(1)], [], raw=text)
    report, _ = validate_coco(ann_file, CLASSES, img_dir)
    assert report.codes('error') == ['malformed_bbox']
    assert 'annotation id 3' in error_text(report) and 'annotation id 4' in error_text(report)


def test_images_without_objects_are_kept(tmp_path):
    images = [_image(i) for i in range(1, 5)]
    anns = [_ann(1, 1, 1, [10, 10, 20, 20]), _ann(2, 2, 1, [0, 0, 0, 0])]  # image 2: dropped box
    ann_file, img_dir = write_coco(tmp_path, images, anns)
    ds = build_dataset(ann_file, img_dir)
    assert len(ds) == 4
    assert [len(ds.get_data_info(i)['instances']) for i in range(4)] == [1, 0, 0, 0]
    stats = ds.validation_report.stats
    assert (stats.num_empty_images, stats.empty_fraction) == (3, 0.75)
    assert 'many_empty_images' in ds.validation_report.codes('warning')
    assert len(ds[1]['data_samples'].gt_instances) == 0


# ---------------------------------------------------------------- model facts and statistics
def test_more_gt_than_queries_and_denoising_budget(tmp_path):
    anns = [_ann(i + 1, 2, 1, [i, i, 5, 5]) for i in range(12)] + [_ann(20, 1, 2, [1, 1, 5, 5])]
    ann_file, img_dir = write_coco(tmp_path, [_image(1), _image(2)], anns)
    model = ModelFacts(num_classes=2, num_queries=10, num_denoising=8)
    report, _ = validate_coco(ann_file, CLASSES, img_dir, model=model)
    assert (report.stats.max_gt, report.stats.max_gt_image_id) == (12, 2)
    assert sorted(report.codes('warning')) == ['gt_exceeds_denoising', 'gt_exceeds_queries']
    warn = '\n'.join(f.message for f in report.warnings)
    assert 'image id 2' in warn and 'model.bbox_head.num_queries=10' in warn
    assert '1 denoising group of 24 queries' in warn
    model = ModelFacts(num_classes=2, num_queries=20, num_denoising=100)
    report, _ = validate_coco(ann_file, CLASSES, img_dir, model=model)
    assert not report.warnings
    assert '8 denoising group(s)' in [f.message for f in report.infos
                                      if f.code == 'denoising_groups'][0]  # 100 // 12


def test_object_sizes_at_the_input_size(tmp_path):
    # image h=100, w=200 stretched to 50x50: x scale 0.25, y scale 0.5
    anns = [_ann(1, 1, 1, [0, 0, 40, 40]),     # 10 x 20 -> shorter 10
            _ann(2, 1, 1, [0, 0, 20, 100]),    # 5 x 50  -> 5
            _ann(3, 1, 2, [0, 0, 200, 100]),   # 50 x 50 -> 50
            _ann(4, 1, 2, [10, 10, 120, 60])]  # 30 x 30 -> 30
    ann_file, img_dir = write_coco(tmp_path, [_image(1, w=200, h=100)], anns)
    report, _ = validate_coco(ann_file, CLASSES, img_dir, input_size=InputSize(50, 50))
    assert report.stats.size_fractions == {8: 0.25, 16: 0.5, 32: 0.75}
    assert report.stats.class_counts == {'square': 2, 'disk': 2}
    # keep_ratio: one factor, as mmcv.rescale_size computes it
    size = InputSize(h=64, w=96, keep_ratio=True)
    new_w, new_h = mmcv.rescale_size((200, 100), (96, 64))
    sy, sx = size.scale_factors(100, 200)
    assert (round(200 * sx), round(100 * sy)) == (new_w, new_h)


def test_tiny_objects_warning(tmp_path):
    anns = [_ann(1, 1, 1, [0, 0, 10, 10]), _ann(2, 1, 2, [0, 0, 50, 50])]
    ann_file, img_dir = write_coco(tmp_path, [_image(1)], anns)
    report, _ = validate_coco(ann_file, CLASSES, img_dir, input_size=InputSize(64, 64))
    assert report.stats.size_fractions[8] == 0.5     # 10 px * 0.64 = 6.4 px
    assert report.codes('warning') == ['tiny_objects']


def test_one_based_and_non_contiguous_ids_are_fine(tmp_path):
    cats = [dict(id=7, name='square'), dict(id=3, name='disk')]
    anns = [_ann(1, 1, 3, [1, 1, 5, 5]), _ann(2, 1, 7, [1, 1, 6, 6])]
    ann_file, img_dir = write_coco(tmp_path, [_image(1)], anns, cats)
    ds = build_dataset(ann_file, img_dir)
    report = ds.validation_report
    assert report.ok and not report.warnings
    assert report.codes('info') == ['image_size_sample', 'category_ids']
    assert report.stats.category_ids == {'square': 7, 'disk': 3}
    labels = {tuple(i['bbox']): i['bbox_label'] for i in ds.get_data_info(0)['instances']}
    assert labels == {(1.0, 1.0, 6.0, 6.0): 1, (1.0, 1.0, 7.0, 7.0): 0}


def test_category_order_differs_from_classes(tmp_path):
    cats = [dict(id=1, name='disk'), dict(id=2, name='square')]
    anns = [_ann(1, 1, 1, [1, 1, 5, 5]), _ann(2, 1, 2, [2, 2, 5, 5])]
    ann_file, img_dir = write_coco(tmp_path, [_image(1)], anns, cats)
    report, _ = validate_coco(ann_file, CLASSES, img_dir)
    assert report.ok and report.codes('warning') == ['category_order']
    # why: mmdet labels by json order, so the 'disk' box gets label 0 = CLASSES[0] 'square'
    ds = build_dataset(ann_file, img_dir)
    assert [i['bbox_label'] for i in ds.get_data_info(0)['instances']] == [0, 1]


# ---------------------------------------------------------------- unreadable images
@pytest.mark.parametrize('content', [b'', b'not an image', 'truncated'])
def test_unreadable_image_fails_with_its_path(tmp_path, content):
    ann_file, img_dir = good_coco(tmp_path)
    path = osp.join(img_dir, '001.png')
    truncated = content == 'truncated'
    if truncated:
        data = open(path, 'rb').read()
        content = data[:len(data) // 2]
    with open(path, 'wb') as f:
        f.write(content)
    load = TRANSFORMS.build(dict(type='RTDETRv2LoadImageFromFile'))
    with pytest.raises(ImageLoadError, match=r"cannot load image file '.*001\.png' \(image id 1\)"):
        load(dict(img_path=path, img_id=1))
    # the dataset's header-size sample finds a file that is not an image
    # (a truncated one keeps its header: the loader finds it, below)
    if not truncated:
        with pytest.raises(DatasetValidationError,
                           match=r"\[unreadable_image\] .*001\.png' \(image id 1\)"):
            build_dataset(ann_file, img_dir)
    # the dataset names the image whatever transform fails, and with mmcv's
    # loader (our configs') says why as RTDETRv2LoadImageFromFile does
    ds = build_dataset(ann_file, img_dir, check_image_files=False)
    with pytest.raises(DatasetPipelineError, match=r"001\.png' \(image id 1\)") as exc:
        ds[0]
    reason = 'the file is empty' if content == b'' else 'cannot be decoded as an image'
    assert f"ImageLoadError: cannot load image file '{path}' (image id 1): {reason}" \
        in str(exc.value), str(exc.value)
    assert isinstance(exc.value.__cause__, ImageLoadError)
    # check_dataset's --verify-images finds it before training
    report, _ = validate_coco(ann_file, CLASSES, img_dir, verify_images=True)
    assert report.codes('error') == ['unreadable_image']
    assert "001.png' (image id 1)" in error_text(report)


# ---------------------------------------------------------------- through the runner
@HOOKS.register_module(force=True)
class _TrainProbeHook(Hook):
    """Counts iterations and keeps, per iteration, the GT count of the
    batch, the loss dict and whether the weights changed."""
    priority = 'LOWEST'

    def before_run(self, runner):
        self.iters = []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self._before = [p.detach().clone() for p in runner.model.parameters()]
        self._num_gt = [len(s.gt_instances) for s in data_batch['data_samples']]

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        changed = any(not torch.equal(a, p) for a, p in zip(self._before,
                                                            runner.model.parameters()))
        self.iters.append(dict(num_gt=self._num_gt, changed=changed,
                               losses={k: float(v.detach()) for k, v in outputs.items()}))


def _runner(tmp_path, ann_file, img_dir, classes=CLASSES, num_classes=2,
            dataset_type='RTDETRv2CocoDataset', validate=True, edit=None):
    """A runner of the tiny r18 config on ``ann_file`` (train and val; val
    off with ``validate=False``), with RTDETRv2LoadImageFromFile, the dataset
    check hook and a probe hook; batches of 2 in file order, no checkpoints."""
    config = tiny_config(str(tmp_path / 'cfg.py'), R18, dict(data_root='', ann_file=ann_file),
                         size=(64, 64), max_epochs=1, batch_size=2, small_model=True)
    cfg = load_config(config, 'none', None, str(tmp_path / 'work'))
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        loader.dataset.update(type=dataset_type, data_root='', ann_file=ann_file,
                              data_prefix=dict(img=img_dir), metainfo=dict(classes=classes))
        loader.dataset.pipeline[0] = dict(type='RTDETRv2LoadImageFromFile')
    cfg.train_dataloader.sampler = dict(type='DefaultSampler', shuffle=False)
    cfg.model.bbox_head.num_classes = num_classes
    if not validate:
        cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.default_hooks.checkpoint = None
    cfg.default_hooks.visualization = dict(type='DetVisualizationHook', draw=False)
    # as configs/_base_/default_runtime.py is to register it: a default hook (a
    # dict entry survives child configs that replace custom_hooks)
    cfg.default_hooks.dataset_check = dict(type='RTDETRv2DatasetCheckHook')
    cfg.custom_hooks = [dict(type='_TrainProbeHook')]
    cfg.randomness = dict(seed=0)
    if edit is not None:
        edit(cfg)
    return RUNNERS.build(cfg)


def _probe(runner):
    return next(h for h in runner.hooks if isinstance(h, _TrainProbeHook))


def _missing_file(root):
    ann_file, img_dir = good_coco(root)
    os.remove(osp.join(img_dir, '003.png'))
    return ann_file, img_dir


# case -> (data maker, runner kwargs, regex the error must match ({ann}, {img} filled in))
RUN_CASES = {
    'malformed_json': (lambda p: write_coco(p, [], [], raw='{"images": [}'), {},
                       r"annotation file '{ann}' is not valid json: .* line 1 column 13"),
    'missing_image': (_missing_file, {}, r"'{img}003\.png' \(image id 3\)"),
    'name_mismatch': (lambda p: write_coco(p, [_image(1)], [_ann(1, 1, 2, [1, 1, 9, 9])],
                                           [dict(id=1, name='square'), dict(id=2, name='Disk')]),
                      {}, r"names missing from the categories of '{ann}': \['disk'\]"),
    'classes_string': (good_coco, dict(classes='cat'),
                       r"metainfo.classes is the string 'cat'.*\('cat',\)"),
    'num_classes': (good_coco, dict(num_classes=80),
                    r'model.bbox_head.num_classes=80 but train_dataloader.dataset.metainfo'
                    r'.classes has 2 names'),
    # mmdet's own CocoDataset builds on a renamed category; the hook stops it
    'name_mismatch_mmdet_dataset': (
        lambda p: write_coco(p, [_image(1)], [_ann(1, 1, 2, [1, 1, 9, 9])],
                             [dict(id=1, name='square'), dict(id=2, name='Disk')]),
        dict(dataset_type='CocoDataset'),
        r"train_dataloader.dataset\).*names missing from the categories of '{ann}'"),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize('case', list(RUN_CASES))
def test_training_stops_before_first_iteration(tmp_path, case):
    make, kwargs, pattern = RUN_CASES[case]
    ann_file, img_dir = make(tmp_path / 'data')
    runner = _runner(tmp_path, ann_file, img_dir, **kwargs)
    with pytest.raises(DatasetValidationError) as exc:
        runner.train()
    assert re.search(pattern.format(ann=re.escape(ann_file), img=re.escape(img_dir)),
                     str(exc.value), re.S), str(exc.value)
    # (runner.iter would build the loop again: read the loop if it was built)
    assert getattr(runner._train_loop, 'iter', 0) == 0
    assert getattr(_probe(runner), 'iters', []) == []


@pytest.mark.timeout(120)
def test_check_hook_checks_the_loops_of_the_run(tmp_path):
    """runner.test() checks the test dataset (named by its key) and not the
    train dataset, whose annotation file does not even exist here."""
    ann_file, img_dir = good_coco(tmp_path / 'data')

    def edit(cfg):
        cfg.train_dataloader.dataset.ann_file = str(tmp_path / 'missing.json')

    runner = _runner(tmp_path, ann_file, img_dir, num_classes=80, edit=edit)
    with pytest.raises(DatasetValidationError) as exc:
        runner.test()
    msg = str(exc.value)
    assert ('model.bbox_head.num_classes=80 but test_dataloader.dataset.metainfo.classes '
            'has 2 names') in msg
    assert 'missing.json' not in msg and 'train_dataloader' not in msg


@pytest.mark.timeout(120)
def test_unreadable_image_stops_training_with_its_path(tmp_path):
    ann_file, img_dir = good_coco(tmp_path / 'data')
    with open(osp.join(img_dir, '002.png'), 'wb') as f:
        f.write(b'not an image')

    def edit(cfg):  # else the dataset's header-size sample stops it when built
        cfg.train_dataloader.dataset.check_image_files = False

    runner = _runner(tmp_path, ann_file, img_dir, validate=False, edit=edit)
    with pytest.raises(DatasetPipelineError) as exc:
        runner.train()
    msg = str(exc.value)
    assert f"pipeline failed on image '{img_dir}002.png' (image id 2)" in msg
    assert f"cannot load image file '{img_dir}002.png' (image id 2)" in msg
    assert isinstance(exc.value.__cause__, ImageLoadError)
    assert _probe(runner).iters == []  # the batch holding it never reached the model


@pytest.mark.timeout(120)
def test_batch_without_objects_trains(tmp_path):
    """Images 1 and 2 have no object (one had only a zero-area box): they
    are kept, form the first batch, give a finite loss and update the
    weights; the hook logs its check."""
    images = [_image(i) for i in (1, 2, 3, 4)]
    anns = [_ann(1, 2, 1, [5, 5, 0, 9]), _ann(2, 3, 1, [10, 10, 30, 30]),
            _ann(3, 4, 2, [40, 40, 30, 20]), _ann(4, 4, 1, [0, 0, 20, 20])]
    ann_file, img_dir = write_coco(tmp_path / 'data', images, anns)
    runner = _runner(tmp_path, ann_file, img_dir, validate=False)
    runner.train()
    iters = _probe(runner).iters
    assert [it['num_gt'] for it in iters] == [[0, 0], [1, 2]]
    for it in iters:
        assert it['changed'], it
        assert all(np.isfinite(v) for v in it['losses'].values()), it['losses']
    assert iters[0]['losses']['loss'] > 0
    with open(osp.join(runner.log_dir, f'{runner.timestamp}.log')) as f:
        log = f.read()
    assert '4 images (2 without objects, kept), 3 boxes' in log
    assert "dataset check (config checks): train_dataloader.dataset '" + ann_file in log
