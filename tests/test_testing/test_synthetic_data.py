"""The synthetic shapes dataset: deterministic, valid COCO, tight boxes."""
import hashlib
import json
import os
import os.path as osp

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from rtdetr_mm.testing import synthetic
from rtdetr_mm.testing.synthetic import make_synthetic_coco, render_dataset_image

from rtdetr_mm.testing.tools import load_tool
TINY = dict(num_train=8, num_val=4, image_size=(96, 128), max_objects=6)


def _hashes(root: str) -> dict:
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = osp.join(dirpath, name)
            with open(path, 'rb') as f:
                out[osp.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('shapes'))
    return make_synthetic_coco(root, **TINY)


def test_byte_identical_reruns(tiny, tmp_path):
    again = make_synthetic_coco(str(tmp_path / 'again'), **TINY)
    first, second = _hashes(tiny['data_root']), _hashes(again['data_root'])
    assert len(first) == 8 + 4 + 2 + 1  # images, 2 annotation files, manifest
    assert first == second
    other = make_synthetic_coco(str(tmp_path / 'seed1'), seed=1, **TINY)
    changed = _hashes(other['data_root'])
    assert changed['images/train/train_000000.png'] != first['images/train/train_000000.png']
    # Every image has its own random stream: more validation images leave
    # the training split unchanged.
    more = make_synthetic_coco(str(tmp_path / 'more_val'), **dict(TINY, num_val=6))
    more_hashes = _hashes(more['data_root'])
    assert all(more_hashes[k] == v for k, v in first.items() if k.startswith('images/'))


def test_coco_valid_and_boxes_inside(tiny):
    classes = synthetic.DEFAULT_CLASSES
    for split, count in (('train', 8), ('val', 4)):
        coco = COCO(tiny[f'{split}_ann'])
        cats = coco.loadCats(coco.getCatIds())
        assert [(c['id'], c['name']) for c in cats] == list(enumerate(classes, 1))
        assert len(coco.getImgIds()) == count
        for img_id in coco.getImgIds():
            info = coco.loadImgs(img_id)[0]
            img = cv2.imread(osp.join(tiny[f'{split}_img_dir'], info['file_name']))
            assert img.shape[:2] == (info['height'], info['width']) == (96, 128)
            for ann in coco.loadAnns(coco.getAnnIds(imgIds=img_id)):
                x, y, w, h = ann['bbox']
                assert all(isinstance(v, int) for v in ann['bbox'])
                assert x >= 0 and y >= 0 and w >= 1 and h >= 1
                assert x + w <= info['width'] and y + h <= info['height']
                assert 0 < ann['area'] <= w * h and ann['iscrowd'] == 0
    anns = json.load(open(tiny['train_ann']))['annotations']
    assert [a['id'] for a in anns] == list(range(1, len(anns) + 1))


def test_boxes_tight_on_drawn_pixels(tiny):
    with open(tiny['manifest']) as f:
        params = json.load(f)['params']
    coco = COCO(tiny['train_ann'])
    sizes = []
    for index in range(8):
        img, objects = render_dataset_image(params, 'train', index)
        stored = cv2.imread(osp.join(tiny['train_img_dir'], f'train_{index:06d}.png'))
        np.testing.assert_array_equal(img, stored)  # the files are these renders
        anns = coco.loadAnns(coco.getAnnIds(imgIds=index + 1))
        assert [a['bbox'] for a in anns] == [o['bbox'] for o in objects]
        assert [a['category_id'] for a in anns] == [o['label'] + 1 for o in objects]
        for obj in objects:
            x, y, w, h = obj['bbox']
            visible = obj['visible']
            # Every visible pixel of the shape has the shape's colour ...
            assert (img[visible] == np.array(obj['colour'], np.uint8)).all()
            # ... and the box is the tightest one around them.
            ys, xs = np.nonzero(visible)
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x, y, x + w, y + h)
            assert visible.sum() >= synthetic.MIN_VISIBLE_FRACTION * obj['full_area']
            sizes.append(max(w, h))
    assert min(sizes) < 20 and max(sizes) > 25  # small and large objects


def test_empty_images_overlaps_and_size_range(tmp_path):
    paths = make_synthetic_coco(str(tmp_path / 'd'), num_train=24, num_val=1,
                                image_size=((80, 120), (100, 140)), max_objects=8)
    coco = COCO(paths['train_ann'])
    heights = {im['height'] for im in coco.dataset['images']}
    widths = {im['width'] for im in coco.dataset['images']}
    assert min(heights) >= 80 and max(heights) <= 120 and len(heights) > 3
    assert min(widths) >= 100 and max(widths) <= 140
    with_objects = {a['image_id'] for a in coco.dataset['annotations']}
    assert 0 < len(with_objects) < 24  # some images without objects
    # Overlapping objects occur (partial occlusion is allowed).
    overlaps = 0
    for img_id in with_objects:
        boxes = [a['bbox'] for a in coco.loadAnns(coco.getAnnIds(imgIds=img_id))]
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                (x1, y1, w1, h1), (x2, y2, w2, h2) = boxes[i], boxes[j]
                overlaps += min(x1 + w1, x2 + w2) > max(x1, x2) and \
                    min(y1 + h1, y2 + h2) > max(y1, y2)
    assert overlaps > 0
    empty = make_synthetic_coco(str(tmp_path / 'e'), num_train=2, num_val=1,
                                image_size=64, max_objects=0)
    assert COCO(empty['train_ann']).dataset['annotations'] == []


def test_manifest_reuse_and_cli(tmp_path, capsys):
    out = str(tmp_path / 'cli')
    cli = load_tool('misc/make_demo_data')
    argv = ['--out', out, '--num-train', '3', '--num-val', '2', '--min-size', '64',
            '--max-size', '72', '--classes', 'square', 'disk', '--check']
    assert cli.main(argv) == 0
    assert 'generated' in capsys.readouterr().out
    manifest = osp.join(out, 'manifest.json')
    stamp = os.stat(manifest).st_mtime_ns
    assert cli.main(argv) == 0
    assert 'up to date' in capsys.readouterr().out
    assert os.stat(manifest).st_mtime_ns == stamp
    # The same parameters through the library function: reused as well.
    make_synthetic_coco(out, num_train=3, num_val=2, image_size=((64, 72), (64, 72)),
                        classes=('square', 'disk'))
    assert os.stat(manifest).st_mtime_ns == stamp
    # Other parameters: regenerated; a corrupted file fails --check.
    assert cli.main(argv[:3] + ['2'] + argv[4:]) == 0
    assert 'generated' in capsys.readouterr().out
    with open(osp.join(out, 'images', 'train', 'train_000000.png'), 'ab') as f:
        f.write(b'x')
    assert cli.main(argv[:3] + ['2'] + argv[4:]) == 1
    with pytest.raises(ValueError):
        make_synthetic_coco(out, classes=('hexagon',))
