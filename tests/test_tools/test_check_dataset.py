"""tools/misc/check_dataset.py on the bundled data and on crafted bad
datasets, and a training run that stops on a bad dataset before the first
iteration."""
import importlib.util
import os
import os.path as osp
import re
import subprocess
import sys

import numpy as np
import pytest
from pycocotools.coco import COCO

from rtdetr_mm.testing.checkout import checkout_env
from rtdetr_mm.testing.synthetic import DEFAULT_CLASSES, make_synthetic_coco
from test_dataset_validation import _ann, _image, good_coco, write_coco

from rtdetr_mm.testing import ROOT
TOOL = osp.join(ROOT, 'tools', 'misc', 'check_dataset.py')
DEMO = osp.join(ROOT, 'configs', 'rtdetrv2_demo', 'rtdetrv2_r18vd-demo_1xb4-12e_shapes.py')
CLASSES = ('square', 'disk')


def _tool():
    spec = importlib.util.spec_from_file_location('check_dataset_tool', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module




def write_config(path, ann_file, img_dir, classes=CLASSES, num_classes=None, extra=''):
    """A child of the demo config whose train and val sets are ``ann_file``
    (RTDETRv2CocoDataset, no workers); demo model with 100 queries and a
    denoising budget of 50, 192x192 input."""
    num_classes = len(classes) if num_classes is None else num_classes
    text = f'''
_base_ = {DEMO!r}
classes = {classes!r}
data = dict(type='RTDETRv2CocoDataset', data_root='', ann_file={ann_file!r},
            data_prefix=dict(img={img_dir!r}), metainfo=dict(classes=classes))
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=data)
val_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                      dataset=data)
test_dataloader = val_dataloader
val_evaluator = dict(ann_file={ann_file!r})
test_evaluator = val_evaluator
model = dict(bbox_head=dict(num_classes={num_classes}))
{extra}
'''
    with open(path, 'w') as f:
        f.write(text)
    return str(path)


@pytest.mark.timeout(120)
def test_bundled_data_passes(tmp_path):
    """Exit 0 on the bundled data (what tools/misc/make_demo_data.py makes,
    smaller) with the demo config; printed statistics against pycocotools
    and numpy on the json."""
    data = make_synthetic_coco(str(tmp_path / 'shapes'), num_train=12, num_val=4)
    root = data['data_root'] + '/'
    proc = subprocess.run(
        [sys.executable, TOOL, DEMO, '--cfg-options', f'train_dataloader.dataset.data_root={root}',
         f'val_dataloader.dataset.data_root={root}'],
        cwd=str(tmp_path), env=checkout_env(), capture_output=True, text=True, timeout=100)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr[-3000:]
    assert 'check_dataset: 2 dataset(s), 0 error(s)' in out
    coco = COCO(data['train_ann'])
    anns = coco.loadAnns(coco.getAnnIds())
    assert f'images {len(coco.getImgIds())}, annotations {len(anns)}' in out
    names = [c['name'] for c in coco.loadCats(coco.getCatIds())]
    assert tuple(names) == DEFAULT_CLASSES
    counts = {c['name']: len(coco.getAnnIds(catIds=[c['id']])) for c in coco.loadCats(
        coco.getCatIds())}
    freq = re.search(r'class frequencies: (.*)', out).group(1)  # the train split comes first
    for name in DEFAULT_CLASSES:
        assert f'{name} {counts[name]} (' in freq
    # shorter side at the demo's 256x256 input (images of 256-320 px stretched to it)
    sides = []
    for a in anns:
        img = coco.imgs[a['image_id']]
        sides.append(min(a['bbox'][2] * 256 / img['width'], a['bbox'][3] * 256 / img['height']))
    sides = np.array(sides)
    expect = ', '.join(f'<{t} px {100 * (sides < t).mean():.1f}%' for t in (8, 16, 32))
    assert f'at the 256x256 (h x w) input, shorter side: {expect}' in out
    empty = sum(1 for i in coco.getImgIds() if not coco.getAnnIds(imgIds=[i]))
    assert f'images without objects: {empty} of 12' in out
    max_gt = max(len(coco.getAnnIds(imgIds=[i])) for i in coco.getImgIds())
    assert f'max GT per image: {max_gt} ' in out
    assert f'num_denoising=50 ({50 // max_gt} denoising group(s)' in out


def _malformed(tmp_path):
    return write_coco(tmp_path, [], [], raw='{"images": [}')


def _missing_image(tmp_path):
    ann_file, img_dir = good_coco(tmp_path)
    os.remove(osp.join(img_dir, '003.png'))
    return ann_file, img_dir


def _renamed(tmp_path):
    cats = [dict(id=1, name='square'), dict(id=2, name='circle')]
    return write_coco(tmp_path, [_image(1)], [_ann(1, 1, 2, [1, 1, 9, 9])], cats)


def _unknown_ids(tmp_path):
    return write_coco(tmp_path, [_image(1)], [_ann(5, 1, 9, [1, 1, 9, 9])])


# problem -> (data maker, config kwargs, exit code, text that must be printed)
CASES = {
    'malformed_json': (_malformed, {}, 1, "ERROR [malformed_json] annotation file '{ann}' is not "
                       'valid json: Expecting value at line 1 column 13'),
    'missing_image': (_missing_image, {}, 1, "ERROR [missing_image_file] 1 image files of "
                      "'{ann}' missing under '{img}': '{img}003.png' (image id 3)"),
    'name_mismatch': (_renamed, {}, 1, "ERROR [class_name_mismatch] "
                      "train_dataloader.dataset.metainfo.classes names missing from the "
                      "categories of '{ann}': ['disk']"),
    # every class is in the json, plus a category with boxes that mmdet would drop
    'extra_category': (lambda p: write_coco(p, [_image(1)], [
        _ann(1, 1, 1, [1, 1, 9, 9]), _ann(2, 1, 3, [1, 1, 9, 9]), _ann(3, 1, 3, [5, 5, 9, 9])],
        [dict(id=1, name='square'), dict(id=2, name='disk'), dict(id=3, name='cone')]), {}, 1,
        "ERROR [extra_categories] categories of '{ann}' not in "
        "train_dataloader.dataset.metainfo.classes: {{'cone': 2}}"),
    'classes_string': (good_coco, dict(classes='square'), 1,
                       'write train_dataloader.dataset.metainfo.classes=(\'square\',)'),
    'num_classes': (good_coco, dict(num_classes=80), 1,
                    'ERROR [num_classes_mismatch] model.bbox_head.num_classes=80 but '
                    'train_dataloader.dataset.metainfo.classes has 2 names'),
    'unknown_ids': (_unknown_ids, {}, 1, 'annotation id 5 -> category_id 9'),
    'bad_boxes': (lambda p: write_coco(p, [_image(1)], [
        _ann(1, 1, 1, [90, 90, 20, 20]), _ann(2, 1, 1, [5, 5, 0, 4]),
        _ann(3, 1, 2, [5, 5, -1, 4]), _ann(4, 1, 2, [200, 5, 10, 10])]), {}, 0,
        'boxes: 1 clipped to the image, 3 dropped (negative-size 1, zero-area 1, '
        'outside-image 1, too-small 0)'),
    'empty_images': (lambda p: write_coco(p, [_image(i) for i in (1, 2, 3, 4)], [
        _ann(1, 1, 1, [1, 1, 40, 40]), _ann(2, 1, 2, [50, 50, 40, 40])]), {}, 0,
        'images without objects: 3 of 4 (75.0%), kept'),
    'gt_over_queries': (lambda p: write_coco(p, [_image(1)], [
        _ann(i + 1, 1, 1 + i % 2, [i % 90, i % 80, 10, 10]) for i in range(101)]), {}, 0,
        'WARNING [gt_exceeds_queries] image id 1 of'),
    'gt_over_denoising': (lambda p: write_coco(p, [_image(1)], [
        _ann(i + 1, 1, 1 + i % 2, [i % 90, i % 80, 10, 10]) for i in range(51)]), {}, 0,
        'objects, more than model.bbox_head.dn_cfg.num_denoising=50: a batch holding it gets 1 '
        'denoising group of 102 queries'),
    'tiny_objects': (lambda p: write_coco(p, [_image(1, w=400, h=400)], [
        _ann(1, 1, 1, [0, 0, 12, 12]), _ann(2, 1, 2, [0, 0, 200, 200])]), {}, 0,
        'shorter side: <8 px 50.0%, <16 px 50.0%, <32 px 50.0%'),
    # image_size (what RTDETRv2Runner writes into every Resize) sets the input size
    'image_size_knob': (lambda p: write_coco(p, [_image(1, w=400, h=400)], [
        _ann(1, 1, 1, [0, 0, 40, 40]), _ann(2, 1, 2, [0, 0, 100, 100])]),
        dict(extra='image_size = (128, 128)'), 0,
        'at the 128x128 (h x w) input, shorter side: <8 px 0.0%, <16 px 50.0%, <32 px 50.0%'),
    'one_based_non_contiguous': (lambda p: write_coco(p, [_image(1)], [
        _ann(1, 1, 4, [1, 1, 9, 9]), _ann(2, 1, 9, [1, 1, 9, 9])],
        [dict(id=4, name='square'), dict(id=9, name='disk')]), {}, 0,
        'info [category_ids] category ids [4, 9] are not contiguous: fine'),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize('case', list(CASES))
def test_check_dataset_problem(tmp_path, capsys, case):
    make, cfg_kw, code, text = CASES[case]
    ann_file, img_dir = make(tmp_path / 'data')
    config = write_config(tmp_path / 'cfg.py', ann_file, img_dir, **cfg_kw)
    rc = _tool().main([config, '--splits', 'train'])
    out = capsys.readouterr().out
    assert rc == code, out
    assert text.format(ann=ann_file, img=img_dir) in out, out
    if code == 0:
        assert 'error(s)' in out and ', 0 error(s)' in out


@pytest.mark.timeout(200)
def test_training_stops_before_first_iteration(tmp_path):
    """tools/train.py on a dataset whose category is renamed: the
    dataset's error names the file and the names, no iteration runs and the
    traceback never enters the model."""
    ann_file, img_dir = _renamed(tmp_path / 'data')
    config = write_config(tmp_path / 'cfg.py', ann_file, img_dir)
    proc = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'train.py'), config,
                           '--work-dir', str(tmp_path / 'work')],
                          cwd=ROOT, env=checkout_env(), capture_output=True, text=True, timeout=180)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, log[-3000:]
    # the last traceback ends in the validator's error (its message has several lines)
    tail = proc.stderr[proc.stderr.rindex('Traceback'):]
    assert re.search(r'^rtdetr_mm\.datasets\.validation\.DatasetValidationError: 2 error',
                     tail, re.M), log[-3000:]
    assert ann_file in proc.stderr and "['disk']" in proc.stderr
    assert 'Epoch(train)' not in log and 'Iter(train)' not in log
    frames = re.findall(r'File "([^"]+)"', proc.stderr)
    assert frames and not [f for f in frames if re.search(
        r'models/(dense_heads|losses|task_modules|detectors)|assigners|match', f)], frames
