"""Duplicate control after the top-K (``test_cfg.score_thr``, ``test_cfg.nms``;
rtdetr_mm/models/layers/postprocess.py) through the head's predict path,
``RTDETRv2Head.predict_by_feat``: hand-made overlaps, an independent greedy
NMS, the threshold, the defaults bit for bit, and the config errors."""
import numpy as np
import pytest
import torch

from rtdetr_mm.models.layers.postprocess import DuplicateControlError

H, W = 100, 200  # (h, w) of the network input = the image (scale factor 1)


def _head(num_classes=2, num_queries=2, **test_cfg):
    """A small RTDETRv2Head; only its predict path runs."""
    from mmdet.registry import MODELS
    return MODELS.build(dict(type='RTDETRv2Head', num_classes=num_classes,
                             in_channels=(32, 32, 32), hidden_dim=32, num_heads=2,
                             num_layers=1, dim_feedforward=64, num_queries=num_queries,
                             dn_cfg=None, test_cfg=test_cfg))


def _predict(head, logits, boxes_cxcywh, scale_factor=(1.0, 1.0)):
    metas = [dict(img_shape=(H, W), batch_input_shape=(H, W), scale_factor=scale_factor)
             for _ in range(logits.shape[0])]
    return head.predict_by_feat(logits, boxes_cxcywh, metas, rescale=True)


def _cxcywh(xyxy_px):
    """(..., 4) xyxy pixels of the H x W input -> cxcywh normalised."""
    b = torch.as_tensor(xyxy_px, dtype=torch.float32)
    norm = b / torch.tensor([W, H, W, H], dtype=torch.float32)
    return torch.cat([(norm[..., :2] + norm[..., 2:]) / 2, norm[..., 2:] - norm[..., :2]], -1)


# two boxes overlapping by IoU 0.81 (box B inside box A: 81 / 100 of its area)
BOX_A, BOX_B = [10, 10, 60, 60], [10, 10, 55, 55]


def _pair(label_a, label_b):
    """Two queries, A scoring 0.9 and B 0.8, with the given classes; every
    other (query, class) pair scores ~0, out of the top-2."""
    logits = torch.full((1, 2, 2), -30.0)
    logits[0, 0, label_a] = float(np.log(0.9 / 0.1))
    logits[0, 1, label_b] = float(np.log(0.8 / 0.2))
    return logits, _cxcywh([[BOX_A, BOX_B]])


@pytest.mark.parametrize('label_b, class_agnostic, kept', [
    (0, False, [0.9]),       # same class: B removed
    (1, False, [0.9, 0.8]),  # two classes, class-aware: both kept
    (1, True, [0.9]),        # two classes, class-agnostic: B removed
    (0, True, [0.9]),
])
def test_hand_made_overlaps(label_b, class_agnostic, kept):
    head = _head(max_per_img=2, nms=dict(type='nms', iou_threshold=0.7,
                                         class_agnostic=class_agnostic))
    result = _predict(head, *_pair(0, label_b))[0]
    np.testing.assert_allclose(result.scores.numpy(), kept, rtol=1e-6)
    assert result.labels.tolist() == [0, label_b][:len(kept)]
    np.testing.assert_allclose(result.bboxes[0].numpy(), BOX_A, atol=1e-4)
    # without NMS both stay; above their IoU, NMS keeps both too
    assert len(_predict(_head(max_per_img=2), *_pair(0, label_b))[0].scores) == 2
    loose = _head(max_per_img=2, nms=dict(type='nms', iou_threshold=0.85))
    assert len(_predict(loose, *_pair(0, label_b))[0].scores) == 2


def _greedy_nms(boxes, scores, iou_threshold):
    """Textbook greedy NMS (numpy): indices kept, by score."""
    order, kept = list(np.argsort(-scores, kind='stable')), []
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    while order:
        i = order.pop(0)
        kept.append(i)
        lt = np.maximum(boxes[i, :2], boxes[order, :2])
        rb = np.minimum(boxes[i, 2:], boxes[order, 2:])
        inter = np.clip(rb - lt, 0, None).prod(-1)
        iou = inter / (area[i] + area[order] - inter)
        order = [j for j, v in zip(order, iou) if v <= iou_threshold]
    return kept


def _clustered_inputs(batch=2, queries=40, classes=3, seed=0):
    """Queries jittered around a few centres (many overlaps), random logits."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.rand(batch, 5, 2, generator=gen) * 0.6 + 0.2
    pick = torch.randint(0, 5, (batch, queries), generator=gen)
    cxcy = centres.gather(1, pick.unsqueeze(-1).repeat(1, 1, 2))
    cxcy = cxcy + 0.03 * torch.randn(batch, queries, 2, generator=gen)
    wh = 0.15 + 0.05 * torch.rand(batch, queries, 2, generator=gen)
    logits = 2 * torch.randn(batch, queries, classes, generator=gen)
    return logits, torch.cat([cxcy, wh], -1)


@pytest.mark.parametrize('class_agnostic', [False, True])
def test_matches_greedy_reference_and_batched_nms(class_agnostic):
    from mmcv.ops import batched_nms
    logits, boxes = _clustered_inputs()
    nms = dict(type='nms', iou_threshold=0.5, class_agnostic=class_agnostic)
    plain = _predict(_head(3, 40, max_per_img=60), logits, boxes, (0.5, 2.0))
    ours = _predict(_head(3, 40, max_per_img=60, nms=nms), logits, boxes, (0.5, 2.0))
    for before, after in zip(plain, ours):
        b, s, lab = (before.bboxes.numpy().astype(np.float64), before.scores.numpy(),
                     before.labels.numpy())
        expected = []
        groups = [np.arange(len(s))] if class_agnostic else [
            np.flatnonzero(lab == c) for c in np.unique(lab)]
        for idx in groups:
            expected += [idx[k] for k in _greedy_nms(b[idx], s[idx], 0.5)]
        expected = sorted(expected)  # the top-K order: by score
        assert 0 < len(expected) < len(s)  # NMS removed some, not all
        np.testing.assert_array_equal(after.scores.numpy(), s[expected])
        np.testing.assert_array_equal(after.labels.numpy(), lab[expected])
        np.testing.assert_array_equal(after.bboxes.numpy(), before.bboxes.numpy()[expected])
        _, kept = batched_nms(before.bboxes, before.scores, before.labels, nms)
        assert sorted(kept.tolist()) == expected


def test_score_thr_drops_detections_at_or_below_it():
    logits, boxes = _clustered_inputs(seed=1)
    plain = _predict(_head(3, 40, max_per_img=60), logits, boxes)
    ours = _predict(_head(3, 40, max_per_img=60, score_thr=0.9), logits, boxes)
    for before, after in zip(plain, ours):
        above = before.scores > 0.9
        assert 0 < int(above.sum()) < len(above)
        assert torch.equal(after.scores, before.scores[above])
        assert torch.equal(after.labels, before.labels[above])
        assert torch.equal(after.bboxes, before.bboxes[above])


@pytest.mark.parametrize('test_cfg', [
    dict(score_thr=None, nms=None),
    dict(nms=dict(type='nms', iou_threshold=1.0)),  # IoU > 1 never: all kept
    dict(score_thr=0.0),  # sigmoid scores are > 0
])
def test_defaults_and_no_op_settings_are_bit_identical(test_cfg):
    logits, boxes = _clustered_inputs(seed=2)
    default = _predict(_head(3, 40), logits, boxes)
    ours = _predict(_head(3, 40, **test_cfg), logits, boxes)
    for a, b in zip(default, ours):
        assert len(a.scores) == 40  # K = num_queries, as today
        for key in ('bboxes', 'scores', 'labels'):
            assert torch.equal(a.get(key), b.get(key)), key


@pytest.mark.parametrize('test_cfg, message', [
    (dict(score_thr=1.5), r'model\.test_cfg\.score_thr=1\.5: must be a number in \[0, 1\]'),
    (dict(nms=dict(type='nms', iou_threshold=0.0)),
     r'model\.test_cfg\.nms\.iou_threshold=0\.0: must be a number in \(0, 1\]'),
    (dict(nms=dict(type='soft_nms', iou_threshold=0.5)),
     r"model\.test_cfg\.nms\.type='soft_nms': must be one of \['nms'\]"),
    (dict(nms=dict(type='nms', iou_thr=0.5)),
     r"model\.test_cfg\.nms has unknown keys \['iou_thr'\]; valid: "
     r"\['type', 'iou_threshold', 'class_agnostic'\]"),
    (dict(nms=dict(type='nms', iou_threshold=0.5, class_agnostic='yes')),
     r"model\.test_cfg\.nms\.class_agnostic='yes': must be True"),
])
def test_invalid_settings_name_the_key(test_cfg, message):
    logits, boxes = _pair(0, 0)
    with pytest.raises(DuplicateControlError, match=message):
        _predict(_head(max_per_img=2, **test_cfg), logits, boxes)
