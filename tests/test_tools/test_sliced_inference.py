"""Sliced inference (issue 14.3): ``rtdetr_mm.apis.sliced_inference`` and
``tools/misc/sliced_inference.py``.

1. Recall on a generated 2000 x 1500 image of 40 small squares (12-20 px,
   ten of them across patch borders) and 3 large ones, with an oracle
   detector (``rtdetr_mm/testing/oracle_detector.py``) that, like a real
   detector, misses objects left with fewer than 24 input pixels by the
   resize to its 320 x 320 input: the single downscaled pass finds only the
   large squares, the patches find all; the merged output holds no two boxes
   of a class above the NMS IoU and each square once. Recall is counted here
   with mmdet's ``bbox_overlaps`` against the drawn squares.
2. The tool end to end with a tiny random-weight RT-DETRv2 on a folder of
   two images: exit 0, the json's fields, one drawn image per input, the
   json equal to the Python function's result.
3. The patch grid against hand-computed origins; the bad inputs (exit 1,
   ``error: ...`` naming the option or file).
"""
import json
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
from mmdet.structures.bbox import bbox_overlaps

from rtdetr_mm.apis import load_detector, predict_images, sliced_inference, tile_origins
from rtdetr_mm.testing import ROOT
from rtdetr_mm.testing.model_utils import save_random_checkpoint
from rtdetr_mm.testing.oracle_detector import build_oracle, draw_squares_image, place_squares
from rtdetr_mm.testing.tiny_coco import CLASSES, make_tiny_coco, tiny_config
from rtdetr_mm.testing.tools import load_tool

R18 = osp.join(ROOT, 'configs/rtdetrv2/rtdetrv2_r18vd_4xb4-120e_coco.py')
HEIGHT, WIDTH = 1500, 2000
PATCH, OVERLAP, NMS_IOU = 640, 0.25, 0.5
# Patch columns start at x = 0, 480, 960, 1360 and rows at y = 0, 480, 860
# (test_tile_origins), so the cut edges are x = 480, 640, 960, 1120, 1360,
# 1600 and y = 480, 640, 860, 1120. Each of these squares lies across one
# (or two): a patch sees a piece of 6 to 10 px of it, large enough for the
# oracle (>= 3 x 8 input pixels at the patches' scale 1/2), and the next
# patch sees it whole.
ACROSS_BORDERS = [
    (632, 300, 16, 0),    # x = 640: 8 + 8 px (IoU of the piece 0.5)
    (634, 1000, 18, 1),   # x = 640: 6 + 12 px (IoU of the piece 0.33)
    (474, 1200, 16, 1),   # x = 480: the second column sees 10 px (a left cut edge)
    (1112, 200, 16, 1),   # x = 1120
    (1592, 700, 16, 0),   # x = 1600, the edge before the last (shifted) column
    (1354, 1300, 14, 0),  # x = 1360, the last column's left edge
    (300, 632, 16, 1),    # y = 640
    (800, 1112, 16, 0),   # y = 1120
    (1800, 852, 18, 1),   # y = 860, the last row's top edge
    (632, 632, 16, 0),    # x = 640 and y = 640: four patches see a piece
    (1592, 472, 16, 1),   # x = 1600 and y = 480
]
LARGE = [(150, 150, 80, 1), (1700, 1250, 80, 0), (1000, 700, 80, 1)]


def _xyxy(squares):
    return torch.tensor([[x, y, x + s, y + s] for x, y, s, _ in squares], dtype=torch.float32)


def _recall(pred, gt_boxes, gt_labels, iou=0.5):
    """Share of the GT squares matched by a prediction of their class at IoU >= iou."""
    hits = 0
    for box, label in zip(gt_boxes, gt_labels):
        same = pred.bboxes[pred.labels == label]
        if len(same) and bbox_overlaps(box[None], same).max() >= iou:
            hits += 1
    return hits / len(gt_boxes)


@pytest.fixture(scope='module')
def squares():
    """The image, its squares (x, y, side, label), and the oracle's outputs:
    sliced (patches + the full image, merged) and the full image alone."""
    placed = place_squares(HEIGHT, WIDTH, 29, (12, 20), fixed=ACROSS_BORDERS + LARGE, seed=1)
    image = draw_squares_image(HEIGHT, WIDTH, placed, seed=1)
    model = build_oracle()
    sliced = sliced_inference(model, image, PATCH, OVERLAP, batch_size=4, full_image=True,
                              nms_iou=NMS_IOU).pred_instances
    full, = predict_images(model, [image])
    return dict(placed=placed, image=image, sliced=sliced, full=full.pred_instances)


def test_slicing_finds_what_the_downscaled_pass_misses(squares):
    placed = squares['placed']
    assert len(placed) == 43
    small = [s for s in placed if s[2] <= 20]
    assert len(small) == 40 and all(12 <= s[2] for s in small)
    gt_boxes, gt_labels = _xyxy(placed), torch.tensor([s[3] for s in placed])
    full = _recall(squares['full'], gt_boxes, gt_labels)
    sliced = _recall(squares['sliced'], gt_boxes, gt_labels)
    assert full <= 0.3, full      # the full pass: the 3 large squares, 3 / 43
    assert sliced >= 0.9, sliced  # the patches: (nearly) all
    assert sliced - full >= 0.6, (sliced, full)


def test_merged_output_has_no_duplicates(squares):
    pred = squares['sliced']
    for label in pred.labels.unique():
        boxes = pred.bboxes[pred.labels == label]
        ious = bbox_overlaps(boxes, boxes).triu(diagonal=1)
        assert ious.max() <= NMS_IOU, (int(label), float(ious.max()))
    # the oracle finds every square exactly once: one box per square, none else
    assert len(pred) == len(squares['placed'])


def test_squares_across_patch_borders_are_found_once(squares):
    """Each is found (IoU >= 0.5 with a box of its class) and no other box
    touches it: the truncated pieces that the patches at its border see
    (IoU 0.5 or less with the whole box, so NMS at 0.5 keeps them) are gone."""
    pred = squares['sliced']
    gt = _xyxy(ACROSS_BORDERS + LARGE)
    ious = bbox_overlaps(gt, pred.bboxes)
    for k, (square, row) in enumerate(zip(ACROSS_BORDERS + LARGE, ious)):
        touching = (row > 0).nonzero().flatten()
        assert len(touching) == 1, (square, row[touching].tolist())
        assert row[touching].item() >= 0.5 and pred.labels[touching].item() == square[3], square


@pytest.mark.parametrize('size, patch, overlap, xs, ys, tile', [
    ((1500, 2000), 640, 0.25, [0, 480, 960, 1360], [0, 480, 860], (640, 640)),
    ((1000, 700), 512, 0.5, [0, 188], [0, 256, 488], (512, 512)),
    ((1280, 1280), 640, 0.0, [0, 640], [0, 640], (640, 640)),
    ((300, 500), 640, 0.25, [0], [0], (300, 500)),   # smaller than a patch: one tile
    ((300, 2000), 640, 0.25, [0, 480, 960, 1360], [0], (300, 640)),
])
def test_tile_origins(size, patch, overlap, xs, ys, tile):
    # step = patch - int(overlap * patch): 480, 256, 640; the last start is size - patch
    grid = tile_origins(*size, patch, overlap)
    assert (grid.xs, grid.ys, (grid.height, grid.width)) == (xs, ys, tile)
    assert grid.origins == [(x, y) for y in ys for x in xs]


# --------------------------------------------------------------- the tool
@pytest.fixture(scope='module')
def tool_run(tmp_path_factory):
    """A tiny random-weight RT-DETRv2 (64 x 64 input) and its checkpoint
    (with its classes), a folder of two images (one smaller than a patch,
    one in a subfolder), and the tool's run on the folder."""
    base = tmp_path_factory.mktemp('sliced')
    data = make_tiny_coco(str(base / 'data'), num_images=1, size=(64, 64))
    config = tiny_config(str(base / 'cfg.py'), R18, data, size=(64, 64), small_model=True)
    ckpt = str(base / 'model.pth')
    save_random_checkpoint(config, ckpt, CLASSES)
    images = base / 'images'
    (images / 'sub').mkdir(parents=True)
    rng = np.random.default_rng(0)
    shapes = {'a.png': (150, 200), 'sub/b.jpg': (40, 48)}
    for name, (h, w) in shapes.items():
        img = (rng.random((h, w, 3)) * 255).astype(np.uint8)
        cv2.rectangle(img, (10, 10), (30, 25), (40, 200, 40), -1)
        cv2.imwrite(str(images / name), img)
    (images / 'notes.txt').write_text('not an image: not listed')
    out = str(base / 'out')
    args = ['--patch-size', '64', '--overlap', '0.25', '--batch-size', '4', '--draw-thr', '0',
            '--device', 'cpu']
    status = load_tool('misc/sliced_inference').main([config, ckpt, str(images), *args,
                                                      '--out-dir', out])
    return dict(base=base, config=config, ckpt=ckpt, images=images, shapes=shapes, out=out,
                status=status)


def test_tool_writes_json_and_drawn_images(tool_run):
    assert tool_run['status'] == 0
    with open(osp.join(tool_run['out'], 'predictions.json')) as f:
        records = json.load(f)
    shapes = tool_run['shapes']
    assert {r['file_name'] for r in records} == set(shapes)  # random weights: boxes everywhere
    for r in records:
        assert set(r) == {'file_name', 'category_id', 'category_name', 'bbox', 'score'}, r
        assert r['category_id'] in (1, 2) and r['category_name'] == CLASSES[r['category_id'] - 1]
        h, w = shapes[r['file_name']]
        x, y, bw, bh = r['bbox']
        assert 0 <= x and 0 <= y and bw >= 0 and bh >= 0, r
        assert x + bw <= w + 0.01 and y + bh <= h + 0.01, r
        assert 0 <= r['score'] <= 1
    for name, (h, w) in shapes.items():
        drawn = cv2.imread(osp.join(tool_run['out'], 'vis', name))
        assert drawn is not None and drawn.shape == (h, w, 3), name
    # the real model's merged boxes: none of a class above the NMS IoU either
    for name in shapes:
        for label in (1, 2):
            boxes = torch.tensor([r['bbox'] for r in records
                                  if r['file_name'] == name and r['category_id'] == label])
            if len(boxes) > 1:
                boxes[:, 2:] += boxes[:, :2]
                assert bbox_overlaps(boxes, boxes).triu(diagonal=1).max() <= NMS_IOU + 1e-3


def test_tool_json_is_the_function_result(tool_run):
    """The json of a.png (150 x 200: 3 x 4 patches of 64 + the full image)
    holds what sliced_inference returns for the same image and settings."""
    with open(osp.join(tool_run['out'], 'predictions.json')) as f:
        mine = [r for r in json.load(f) if r['file_name'] == 'a.png']
    model = load_detector(tool_run['config'], tool_run['ckpt'], 'cpu')
    image = cv2.imread(str(tool_run['images'] / 'a.png'))
    result = sliced_inference(model, image, 64, 0.25, batch_size=4)
    assert result.num_patches == 12
    pred = result.pred_instances
    assert len(mine) == len(pred) > 0
    boxes = torch.tensor([r['bbox'] for r in mine])
    boxes[:, 2:] += boxes[:, :2]
    assert torch.allclose(boxes, pred.bboxes, atol=0.02)
    assert [r['category_id'] for r in mine] == (pred.labels + 1).tolist()
    assert np.allclose([r['score'] for r in mine], pred.scores.numpy(), atol=1e-4)


@pytest.mark.parametrize('case', ['missing', 'empty_folder', 'overlap', 'patch', 'nms',
                                  'checkpoint', 'unreadable'])
def test_tool_errors(tool_run, case, capsys):
    base, images = tool_run['base'], str(tool_run['images'])
    args, named = [tool_run['config'], tool_run['ckpt'], images], None
    if case == 'missing':
        args[2] = named = str(base / 'nowhere.png')
    elif case == 'empty_folder':
        (base / 'empty').mkdir(exist_ok=True)
        args[2] = named = str(base / 'empty')
    elif case == 'overlap':
        args += ['--overlap', '1.0']
        named = '--overlap'
    elif case == 'patch':
        args += ['--patch-size', '16']
        named = '--patch-size'
    elif case == 'nms':
        args += ['--nms-iou', '0']
        named = '--nms-iou'
    elif case == 'checkpoint':
        args[1] = named = str(base / 'missing.pth')
    elif case == 'unreadable':
        bad = base / 'bad.png'
        bad.write_bytes(b'not a png at all')
        args[2] = named = str(bad)
    status = load_tool('misc/sliced_inference').main(args + ['--out-dir', str(base / 'err')])
    err = capsys.readouterr().err
    assert status == 1
    assert err.startswith('error: ') and named in err, err
