"""tools/misc/check_dataset.py on the bundled data and on crafted bad
datasets, and a training run that stops on a bad dataset before the first
iteration."""
import json
import os
import os.path as osp
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from rtdetr_mm.testing.checkout import checkout_env
from rtdetr_mm.testing.synthetic import DEFAULT_CLASSES, make_synthetic_coco
from rtdetr_mm.testing.tiny_coco import coco_ann as _ann, coco_image as _image
from rtdetr_mm.testing.tiny_coco import good_coco, write_coco
from rtdetr_mm.testing.tools import load_tool

from rtdetr_mm.testing import ROOT
TOOL = osp.join(ROOT, 'tools', 'misc', 'check_dataset.py')
DEMO = osp.join(ROOT, 'configs', 'rtdetrv2_demo', 'rtdetrv2_r18vd-demo_1xb4-12e_shapes.py')
CLASSES = ('square', 'disk')


def _tool():
    return load_tool('misc/check_dataset')




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
                        drop_last=False,  # some of these datasets have 1 image
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
         f'val_dataloader.dataset.data_root={root}',
         f'val_evaluator.ann_file={data["val_ann"]}'],  # (read by CocoMetric itself)
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


def _crowd(i, img, cat, bbox):
    return dict(_ann(i, img, cat, bbox), iscrowd=1)


def _resized_file(tmp_path):
    """Image 2's file is 80 wide, 60 high; the json says 100x100."""
    ann_file, img_dir = good_coco(tmp_path)
    cv2.imwrite(osp.join(img_dir, '002.png'), np.zeros((60, 80, 3), np.uint8))
    return ann_file, img_dir


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
    # crowd boxes are ignored by training (mmdet's ignore_flag): all of them
    # is an error, some a warning with counts
    'all_crowd': (lambda p: write_coco(p, [_image(1), _image(2)], [
        _crowd(1, 1, 1, [1, 1, 40, 40]), _crowd(2, 1, 2, [50, 50, 40, 40]),
        _crowd(3, 2, 2, [5, 5, 30, 30])]), {}, 1,
        "ERROR [all_boxes_ignored] every box in '{ann}' has iscrowd=1 (3 boxes in 2 images): "
        'mmdet sets ignore_flag on crowd boxes, so none reaches the matcher or the loss'),
    'some_crowd': (lambda p: write_coco(p, [_image(1), _image(2)], [
        _ann(1, 1, 1, [1, 1, 40, 40]), _crowd(2, 1, 2, [50, 50, 40, 40]),
        _crowd(3, 2, 2, [5, 5, 30, 30])]), {}, 0,
        "WARNING [crowd_boxes_ignored] 2 of 3 boxes of '{ann}' have iscrowd=1 and are ignored "
        "by training (mmdet's ignore_flag: they never reach the loss), in 2 images (ids 1, 2); "
        '1 of them are left without a usable box'),
    'crowd_statistics': (lambda p: write_coco(p, [_image(1), _image(2)], [
        _ann(1, 1, 1, [1, 1, 40, 40]), _crowd(2, 1, 2, [50, 50, 40, 40]),
        _crowd(3, 2, 2, [5, 5, 30, 30])]), {}, 0,
        'images 2, annotations 3, boxes kept 1, ignored 2 (iscrowd=1'),
    # a json width/height that is not the file's (header read, by default)
    'image_size_mismatch': (_resized_file, {}, 1,
                            "ERROR [image_size_mismatch] 1 images of '{ann}' whose size differs "
                            "from the json width/height (boxes are clipped and dropped against "
                            "the json size, the model sees the file: fix width/height in the "
                            "json): '{img}002.png' (image id 2) is 60x80 (h x w) on disk, the "
                            "json says height=100, width=100"),
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
    """tools/train.py on a dataset whose category is renamed: exit 1 with
    the dataset's error naming the file and the names, no iteration runs,
    no traceback."""
    ann_file, img_dir = _renamed(tmp_path / 'data')
    config = write_config(tmp_path / 'cfg.py', ann_file, img_dir)
    proc = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'train.py'), config,
                           '--work-dir', str(tmp_path / 'work')],
                          cwd=ROOT, env=checkout_env(), capture_output=True, text=True, timeout=180)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 1, log[-3000:]
    # the validator's error (its message has several lines), printed once
    assert re.search(r"^error: 2 error\(s\) in dataset '", proc.stderr, re.M), log[-3000:]
    assert proc.stderr.count('error: ') == 1 and 'Traceback' not in proc.stderr
    assert ann_file in proc.stderr and "['disk']" in proc.stderr
    assert 'Epoch(train)' not in log and 'Iter(train)' not in log


# ------------------------------------------------ issue 12: checks that match training
def _run_tool(capsys, config, *args):
    rc = _tool().main([config, *args])
    return rc, capsys.readouterr().out


def test_dropped_box_warnings_name_annotation_ids(tmp_path, capsys):
    """Each clipped or dropped box is named by its annotation id, under the
    code of its reason (the validator once counted them under one key and
    emitted under another, so these lines never appeared)."""
    ann_file, img_dir = write_coco(tmp_path / 'data', [_image(1)], [
        _ann(1, 1, 1, [90, 90, 20, 20]), _ann(2, 1, 1, [5, 5, 0, 4]),
        _ann(3, 1, 2, [5, 5, -1, 4]), _ann(4, 1, 2, [200, 5, 10, 10]),
        _ann(5, 1, 2, [10, 10, 30, 30])])
    rc, out = _run_tool(capsys, write_config(tmp_path / 'cfg.py', ann_file, img_dir),
                        '--splits', 'train')
    assert rc == 0, out
    for line in (
            'info [box_clipped] 1 boxes partly outside the image, clipped to it: annotation '
            'id 1 (image id 1, 100x100): bbox=[90, 90, 20, 20]',
            'WARNING [box_negative_size] 1 boxes negative width or height, dropped: '
            'annotation id 3 (image id 1, 100x100): bbox=[5, 5, -1, 4]',
            'WARNING [box_zero_area] 1 boxes zero width or height, dropped: annotation id 2 '
            '(image id 1, 100x100): bbox=[5, 5, 0, 4]',
            'WARNING [box_outside_image] 1 boxes entirely outside the image, dropped: '
            'annotation id 4 (image id 1, 100x100): bbox=[200, 5, 10, 10]'):
        assert line in out, out
    assert 'annotation id 5' not in out


def _many_images(tmp_path, bad_index):
    """40 images; the file of json image ``bad_index + 1`` is 50x70 (h x w)."""
    images = [_image(i) for i in range(1, 41)]
    ann_file, img_dir = write_coco(tmp_path, images, [_ann(1, 1, 1, [1, 1, 20, 20])])
    name = images[bad_index]['file_name']
    cv2.imwrite(osp.join(img_dir, name), np.zeros((50, 70, 3), np.uint8))
    return ann_file, img_dir, name


def test_image_sizes_sampled_by_default_all_with_verify_images(tmp_path, capsys):
    """The default sample (16 of 40: the first 8 and 8 evenly spaced) says
    its size; an image outside it is found by --verify-images only."""
    from rtdetr_mm.datasets.validation import size_sample
    # the first 8; linspace(0, 39, 8) rounds to 0, 6 (both taken), 11, 17, 22,
    # 28, 33, 39; filled up to 16 in order (8, 9)
    assert size_sample(40) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 17, 22, 28, 33, 39]
    outside = 12  # not in the sample
    ann_file, img_dir, name = _many_images(tmp_path / 'data', outside)
    config = write_config(tmp_path / 'cfg.py', ann_file, img_dir)
    rc, out = _run_tool(capsys, config, '--splits', 'train')
    assert rc == 0, out
    assert (f"info [image_size_sample] image sizes of '{ann_file}' checked against the json "
            'for 16 of 40 images (header sizes read (the first ones and evenly spaced ones)); '
            'check_dataset.py --verify-images') in out
    rc, out = _run_tool(capsys, config, '--splits', 'train', '--verify-images')
    assert rc == 1, out
    assert (f"'{img_dir}{name}' (image id {outside + 1}) is 50x70 (h x w) on disk, the json "
            'says height=100, width=100') in out
    assert 'for 40 of 40 images (decoded)' in out


def test_exif_rotated_jpeg_is_not_flagged(tmp_path, capsys):
    """A JPEG stored 60 wide x 40 high with EXIF orientation 6 (turn 90
    degrees) is loaded by mmdet (OpenCV) as 40 wide x 60 high: a json saying
    so passes, by header and by decode; the stored size is flagged."""
    from PIL import Image
    data = tmp_path / 'data'
    (data / 'img').mkdir(parents=True)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(str(data / 'img' / 'r.jpg'),
                                                          exif=exif)
    import mmcv
    assert mmcv.imread(str(data / 'img' / 'r.jpg')).shape[:2] == (60, 40)
    for (w, h), code in (((40, 60), 0), ((60, 40), 1)):
        ann_file = str(data / f'ann_{w}x{h}.json')
        with open(ann_file, 'w') as f:
            json.dump(dict(images=[dict(id=1, file_name='r.jpg', width=w, height=h)],
                           annotations=[_ann(1, 1, 1, [1, 1, 20, 20])],
                           categories=[dict(id=1, name='square'), dict(id=2, name='disk')]), f)
        config = write_config(tmp_path / f'cfg_{w}.py', ann_file, str(data / 'img') + '/')
        for extra in ([], ['--verify-images']):
            rc, out = _run_tool(capsys, config, '--splits', 'train', *extra)
            assert rc == code, (w, h, extra, out)
            if code:
                assert ("r.jpg' (image id 1) is 60x40 (h x w) on disk, the json says "
                        'height=40, width=60') in out, out


VAL_EXTRA = '''
val_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                      dataset=dict(data, ann_file={val!r}, test_mode=True))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file={val!r})
test_evaluator = val_evaluator
'''


def _val_case(tmp_path, case):
    """A good train json and a val json of the ``case``: ``no_key`` (no
    "annotations"), ``empty`` ("annotations": []) or ``no_area``."""
    ann_file, img_dir = good_coco(tmp_path / 'data')
    with open(ann_file) as f:
        coco = json.load(f)
    if case == 'no_key':
        del coco['annotations']
    elif case == 'empty':
        coco['annotations'] = []
    else:
        for a in coco['annotations']:
            del a['area']
    val = str(tmp_path / 'data' / f'val_{case}.json')
    with open(val, 'w') as f:
        json.dump(coco, f)
    config = write_config(tmp_path / 'cfg.py', ann_file, img_dir,
                          extra=VAL_EXTRA.format(val=val))
    return config, val


VAL_CASES = {
    'no_key': ("ERROR [no_evaluation_gt] val_evaluator (CocoMetric) reads '{val}', which has "
               'no "annotations" key: every mAP would be -1 (no ground truth) and no best '
               'checkpoint could be chosen'),
    'empty': "ERROR [no_evaluation_gt] val_evaluator (CocoMetric) reads '{val}', which has "
             '"annotations": []',
    'no_area': ("ERROR [missing_area] 3 of 3 annotations of '{val}' have no \"area\" "
                '(annotation id 1; annotation id 2; annotation id 3): val_evaluator '
                "(CocoMetric) reads this file with pycocotools, whose COCOeval raises "
                "KeyError: 'area' at the first evaluation"),
}


@pytest.mark.parametrize('case', list(VAL_CASES))
def test_val_ground_truth_checked_before_training(tmp_path, capsys, case):
    config, val = _val_case(tmp_path, case)
    rc, out = _run_tool(capsys, config)
    assert rc == 1, out
    assert VAL_CASES[case].format(val=val) in out, out
    if case == 'no_area':
        # the way out the message gives: CocoMetric builds its ground truth
        # from the dataset (areas from the boxes)
        rc, out = _run_tool(capsys, config, '--cfg-options', 'val_evaluator.ann_file=None')
        assert rc == 0, out
    if case == 'no_key':  # format_only needs no ground truth
        rc, out = _run_tool(capsys, config, '--cfg-options', 'val_evaluator.format_only=True',
                            'val_evaluator.outfile_prefix=' + str(tmp_path / 'preds'))
        assert rc == 0, out


def _train_error(config, work_dir, capsys):
    """tools/train.py CONFIG in-process: exit status 1 and the error it
    prints (a DatasetValidationError's message; no iteration may have run)."""
    capsys.readouterr()
    assert load_tool('train').main([config, '--work-dir', str(work_dir)]) == 1
    err = capsys.readouterr().err
    # (earlier stderr skipped: mmengine's logger may hold an earlier capture's stream)
    assert 'error: ' in err, err
    err = err[err.index('error: '):]
    assert 'Traceback' not in err, err
    logs = [os.path.join(d, f) for d, _, fs in os.walk(work_dir) for f in fs
            if f.endswith('.log')]
    for log in logs:
        text = open(log).read()
        assert 'Epoch(train)' not in text and 'Iter(train)' not in text
    return err


@pytest.mark.timeout(120)
def test_train_stops_before_first_iteration_on_training_mismatches(tmp_path, capsys):
    """tools/train.py: only crowd boxes in the train json, a json size that
    is not the file's, a val json without annotations or without area: each
    stops before the first iteration, naming the file and the ids."""
    ann_file, img_dir = CASES['all_crowd'][0](tmp_path / 'crowd')
    msg = _train_error(write_config(tmp_path / 'c1.py', ann_file, img_dir), tmp_path / 'w1', capsys)
    assert f"[all_boxes_ignored] every box in '{ann_file}' has iscrowd=1 (3 boxes" in msg
    ann_file, img_dir = _resized_file(tmp_path / 'size')
    msg = _train_error(write_config(tmp_path / 'c2.py', ann_file, img_dir), tmp_path / 'w2', capsys)
    assert f"'{img_dir}002.png' (image id 2) is 60x80 (h x w) on disk" in msg
    for case in ('empty', 'no_area'):
        config, val = _val_case(tmp_path / case, case)
        msg = _train_error(config, tmp_path / f'w_{case}', capsys)
        expected = VAL_CASES[case].format(val=val).split('] ', 1)[1]
        assert expected in msg, msg
        assert 'val_dataloader.dataset' in msg  # the dataset of the split is named


def test_run_settings_reported_as_training_would_refuse_them(tmp_path, capsys):
    """check_dataset.py reports the run settings tools/train.py refuses
    (the same table) and an epoch without iterations for the train split's
    length (3 images, one without objects, kept: filter_empty_gt=False),
    exit 1; with filter_empty_gt=True the split counts 2 images."""
    ann_file, img_dir = good_coco(tmp_path / 'data')
    config = write_config(tmp_path / 'cfg.py', ann_file, img_dir)
    rc, out = _run_tool(capsys, config, '--splits', 'train')
    assert rc == 0 and '== run settings: OK' in out, out

    rc, out = _run_tool(capsys, config, '--splits', 'train', '--cfg-options',
                        'model.bbox_head.loss_cls.alpha=1.5', 'train_dataloader.batch_size=4',
                        'train_dataloader.drop_last=True')
    assert rc == 1, out
    assert '== run settings: 2 out of range' in out, out
    assert 'ERROR [run_setting] model.bbox_head.loss_cls.alpha=1.5: must be a number in [0, 1]' \
        in out
    assert ('ERROR [run_setting] train_dataloader.batch_size=4 with drop_last=True leaves 0 '
            'iterations per epoch: the dataset has 3 images;') in out, out

    # 2 processes: 2 images each (mmengine pads to ceil(3 / 2)) < batch 3
    rc, out = _run_tool(capsys, config, '--splits', 'train', '--world-size', '2',
                        '--cfg-options', 'train_dataloader.batch_size=3',
                        'train_dataloader.drop_last=True')
    assert rc == 1 and 'the dataset has 3 images (2 on each of 2 processes)' in out, out
    rc, out = _run_tool(capsys, config, '--splits', 'train', '--cfg-options',
                        'train_dataloader.batch_size=3', 'train_dataloader.drop_last=True')
    assert rc == 0, out
    rc, out = _run_tool(capsys, config, '--splits', 'train', '--cfg-options',
                        'train_dataloader.batch_size=3', 'train_dataloader.drop_last=True',
                        'train_dataloader.dataset.filter_cfg.filter_empty_gt=True')
    assert rc == 1 and 'the dataset has 2 images;' in out, out
