"""Loss and matcher knobs of the seed script, checked for exact values.

USE_FOCAL_LOSS / FOCAL_GAMMA / FOCAL_ALPHA -> ``model.bbox_head.loss_cls.
{loss_type, gamma, alpha}``, EOS_COEF -> ``...loss_cls.eos_coef``,
LABEL_SMOOTHING_IN_MODEL -> ``...loss_cls.label_smoothing``, CLASS_LOSS_COEF ->
``...loss_cls.loss_weight``, MATCHER_CLASS_COST / MATCHER_BBOX_COST ->
``model.train_cfg.assigner.match_costs[0|1].weight``.

References are independent of :class:`RTDETRv2ClassificationLoss`: VFL and
BCE are written element by element with :mod:`math`, focal is mmdet's
``py_sigmoid_focal_loss``. With the default keys the head's loss equals
transformers' RT-DETRv2 loss: tests/test_loss_parity.py.
"""
import math
import random

import pytest
import torch
import torch.nn.functional as F
from mmdet.models.losses.focal_loss import py_sigmoid_focal_loss
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.structures import InstanceData

import rtdetr_mm  # noqa: F401
from rtdetr_mm.engine.optimizers import RTDETRv2AmpOptimWrapper
from model_utils import R18, build_model, data_samples, random_gts

NUM_CLASSES = 3
AVG = 2.5  # normaliser (GT boxes averaged over ranks)


@pytest.fixture(scope='module')
def batch():
    """Six queries, three classes: rows 0, 2, 5 matched (classes 1, 0, 2),
    rows 1, 3, 4 matched to no GT (label = NUM_CLASSES)."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, NUM_CLASSES, generator=gen) * 3
    labels = torch.tensor([1, NUM_CLASSES, 0, NUM_CLASSES, NUM_CLASSES, 2])
    ious = torch.tensor([0.8, 0.0, 0.35, 0.0, 0.0, 0.6])
    return logits, labels, ious


def _loss(**kwargs):
    return MODELS.build(dict(type='RTDETRv2ClassificationLoss', **kwargs))


def _sig(x):
    return 1.0 / (1.0 + math.exp(-x))


def _bce(x, y):
    """Numerically plain sigmoid BCE of one logit ``x`` and target ``y``."""
    p = _sig(x)
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def _targets(label, num_classes, eps):
    """One-hot ``t`` and smoothed ``s = t * (1 - eps) + eps / C``."""
    t = [1.0 if c == label else 0.0 for c in range(num_classes)]
    return t, [tc * (1 - eps) + eps / num_classes for tc in t]


def _hand_rows(logits, labels, ious, family, alpha=None, gamma=None, eps=0.0):
    """Per-query (row) loss sums, written term by term."""
    rows = []
    for x_row, label, q in zip(logits.tolist(), labels.tolist(), ious.tolist()):
        t, s = _targets(label, len(x_row), eps)
        row = 0.0
        for x, tc, sc in zip(x_row, t, s):
            p = _sig(x)
            if family == 'vfl':
                weight = alpha * p ** gamma * (1 - tc) + q * tc
                row += weight * _bce(x, q * sc)
            else:  # bce
                row += _bce(x, sc)
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float64)


def test_defaults_are_the_official_families():
    assert (_loss().loss_type, _loss().alpha, _loss().gamma) == ('vfl', 0.75, 2.0)
    focal = _loss(loss_type='focal')
    assert (focal.alpha, focal.gamma) == (0.25, 2.0)
    with pytest.raises(ValueError, match='bce'):
        _loss(loss_type='bce', alpha=0.5)
    with pytest.raises(ValueError, match='bce'):
        _loss(loss_type='bce', gamma=1.0)


@pytest.mark.parametrize('alpha,gamma', [(None, None), (0.6, 1.5)])
def test_vfl_alpha_gamma_exact(batch, alpha, gamma):
    logits, labels, ious = batch
    got = _loss(loss_type='vfl', alpha=alpha, gamma=gamma)(logits, labels, ious, AVG)
    ref = _hand_rows(logits, labels, ious, 'vfl', alpha or 0.75, gamma or 2.0).sum() / AVG
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)


@pytest.mark.parametrize('alpha,gamma', [(None, None), (0.6, 1.5)])
def test_focal_alpha_gamma_equal_mmdet_reference(batch, alpha, gamma):
    logits, labels, ious = batch
    got = _loss(loss_type='focal', alpha=alpha, gamma=gamma)(logits, labels, ious, AVG)
    onehot = F.one_hot(labels, NUM_CLASSES + 1)[:, :NUM_CLASSES].float()
    ref = py_sigmoid_focal_loss(logits, onehot, gamma=gamma or 2.0, alpha=alpha or 0.25,
                                reduction='sum') / AVG
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)


def test_use_focal_loss_false_is_plain_bce(batch):
    logits, labels, ious = batch
    got = _loss(loss_type='bce')(logits, labels, ious, AVG)
    ref = _hand_rows(logits, labels, ious, 'bce').sum() / AVG
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)


@pytest.mark.parametrize('family', ['vfl', 'bce', 'focal'])
@pytest.mark.parametrize('eos', [0.0, 0.1])
def test_eos_coef_scales_only_unmatched_rows(batch, family, eos):
    """Per-row loss from the gradient-free per-row decomposition: the loss
    of a batch restricted to one row, times AVG, is that row's sum."""
    logits, labels, ious = batch
    base, weighted = _loss(loss_type=family), _loss(loss_type=family, eos_coef=eos)
    unmatched = labels == NUM_CLASSES
    for i in range(len(labels)):
        one = (logits[i:i + 1], labels[i:i + 1], ious[i:i + 1], AVG)
        factor = eos if unmatched[i] else 1.0
        assert weighted(*one).item() == pytest.approx(factor * base(*one).item(), abs=1e-7)
    # the normaliser is untouched: matched rows + eos * unmatched rows
    matched_sum = sum(base(logits[i:i + 1], labels[i:i + 1], ious[i:i + 1], 1.0)
                      for i in range(6) if not unmatched[i])
    unmatched_sum = sum(base(logits[i:i + 1], labels[i:i + 1], ious[i:i + 1], 1.0)
                        for i in range(6) if unmatched[i])
    total = weighted(logits, labels, ious, AVG)
    assert total.item() == pytest.approx(((matched_sum + eos * unmatched_sum) / AVG).item(),
                                         rel=1e-5)


def _targets_from_grad(loss, logits, labels, ious):
    """BCE(x, y) has d/dx = w * (sigmoid(x) - y): recover y where w = 1."""
    x = logits.clone().requires_grad_(True)
    loss(x, labels, ious, 1.0).backward()
    return torch.sigmoid(logits) - x.grad


@pytest.mark.parametrize('eps', [0.1, 0.3])
def test_label_smoothing_moves_bce_targets_by_formula(batch, eps):
    logits, labels, ious = batch
    targets = _targets_from_grad(_loss(loss_type='bce', label_smoothing=eps), logits, labels, ious)
    for row, label in zip(targets.tolist(), labels.tolist()):
        _, expected = _targets(label, NUM_CLASSES, eps)
        assert row == pytest.approx(expected, abs=1e-6)
    got = _loss(loss_type='bce', label_smoothing=eps)(logits, labels, ious, AVG)
    ref = _hand_rows(logits, labels, ious, 'bce', eps=eps).sum() / AVG
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)


@pytest.mark.parametrize('eps', [0.1, 0.3])
def test_label_smoothing_vfl_before_iou_scaling_mask_unsmoothed(batch, eps):
    """VFL target is q * s (smoothing before IoU scaling); the weight's
    positive/negative mask is the unsmoothed one-hot t."""
    logits, labels, ious = batch
    loss = _loss(loss_type='vfl', label_smoothing=eps)
    got = loss(logits, labels, ious, AVG)
    ref = _hand_rows(logits, labels, ious, 'vfl', 0.75, 2.0, eps=eps).sum() / AVG
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)
    # gradient at a positive entry: q * (p - q * s)
    x = logits.clone().requires_grad_(True)
    loss(x, labels, ious, 1.0).backward()
    p = torch.sigmoid(logits)
    for i, label in enumerate(labels.tolist()):
        if label < NUM_CLASSES:
            q = ious[i].item()
            s = 1 - eps + eps / NUM_CLASSES
            assert x.grad[i, label].item() == pytest.approx(q * (p[i, label].item() - q * s),
                                                            abs=1e-6)


def test_label_smoothing_range_checked():
    with pytest.raises(ValueError, match='label_smoothing'):
        _loss(label_smoothing=1.0)


# ----------------------------------------------------------- head level
@pytest.fixture(scope='module')
def small_head_inputs():
    torch.manual_seed(0)
    model = build_model(R18, num_queries=20, num_denoising=10, num_layers=2).eval()
    shape = (128, 128)
    boxes, labels = random_gts([3, 2], shape, num_classes=80, seed=1)
    samples = data_samples(boxes, labels, shape)
    with torch.no_grad():
        feats = model.extract_feat(torch.randn(2, 3, *shape))
    model.train()  # the head returns auxiliary, encoder and denoising outputs
    return model, feats, samples


def _head_losses(model, feats, samples, **loss_cls):
    head = model.bbox_head
    saved = head.loss_cls
    head.loss_cls = MODELS.build(dict(type='RTDETRv2ClassificationLoss', **loss_cls))
    try:
        torch.manual_seed(123)  # same denoising queries every call
        with torch.no_grad():
            return {k: v.item() for k, v in head.loss(feats, samples).items()}
    finally:
        head.loss_cls = saved


def test_class_loss_coef_doubles_every_cls_term_and_nothing_else(small_head_inputs):
    model, feats, samples = small_head_inputs
    one = _head_losses(model, feats, samples, loss_weight=1.0)
    two = _head_losses(model, feats, samples, loss_weight=2.0)
    assert one.keys() == two.keys()
    cls_keys = [k for k in one if k.endswith('loss_cls')]
    # final, auxiliary (d0.), encoder (enc_) and denoising (dn_, d0.dn_) terms
    assert {'loss_cls', 'd0.loss_cls', 'enc_loss_cls', 'dn_loss_cls', 'd0.dn_loss_cls'} \
        <= set(cls_keys)
    for k in one:
        expected = 2 * one[k] if k in cls_keys else one[k]
        assert two[k] == pytest.approx(expected, rel=1e-6), k


def test_eos_coef_reaches_every_cls_term_and_no_box_term(small_head_inputs):
    """Every classification term (final, auxiliary, encoder, denoising) is
    matched + eos * unmatched: linear in eos with a positive unmatched
    part; box terms do not move."""
    model, feats, samples = small_head_inputs
    full = _head_losses(model, feats, samples, eos_coef=1.0)
    half = _head_losses(model, feats, samples, eos_coef=0.5)
    none = _head_losses(model, feats, samples, eos_coef=0.0)
    cls_keys = [k for k in full if k.endswith('loss_cls')]
    assert len(cls_keys) == 5
    for k in full:
        if k in cls_keys:
            assert none[k] < full[k] - 1e-6, k
            assert half[k] == pytest.approx((none[k] + full[k]) / 2, rel=1e-5), k
        else:
            assert none[k] == pytest.approx(full[k], rel=1e-6), k
            assert half[k] == pytest.approx(full[k], rel=1e-6), k


# --------------------------------------------------------------- matcher
def _assigner(class_cost=2.0, bbox_cost=5.0, giou_cost=2.0, **cfg_options):
    cfg = Config.fromfile(R18)
    options = {'model.train_cfg.assigner.match_costs.0.weight': class_cost,
               'model.train_cfg.assigner.match_costs.1.weight': bbox_cost,
               'model.train_cfg.assigner.match_costs.2.weight': giou_cost}
    options.update(cfg_options)
    cfg.merge_from_dict(options)
    return MODELS.build(cfg.model).bbox_head.assigner  # what the head matches with


def _assign(assigner, scores, pred_boxes, gt_boxes, gt_labels):
    pred = InstanceData(scores=scores, bboxes=pred_boxes)
    gt = InstanceData(bboxes=gt_boxes, labels=gt_labels)
    result = assigner.assign(pred, gt, img_meta=dict(img_shape=(100, 100)))
    return (result.gt_inds - 1).tolist()  # -1: unmatched


GT_BOXES = torch.tensor([[10., 10., 30., 30.], [60., 60., 90., 90.]])
GT_LABELS = torch.tensor([0, 1])


def test_matcher_class_vs_box_cost_decides_conflicting_case():
    """Query 0 says class 0 but sits on GT 1; query 1 says class 1 but sits
    on GT 0. A large class cost matches by class, a large box cost by box."""
    scores = torch.tensor([[6., -6.], [-6., 6.]])
    pred_boxes = torch.tensor([[61., 59., 91., 88.], [11., 9., 31., 29.]])
    by_class = _assign(_assigner(class_cost=10.0, bbox_cost=0.01, giou_cost=0.0),
                       scores, pred_boxes, GT_BOXES, GT_LABELS)
    by_box = _assign(_assigner(class_cost=0.01, bbox_cost=5.0, giou_cost=0.0),
                     scores, pred_boxes, GT_BOXES, GT_LABELS)
    by_giou = _assign(_assigner(class_cost=0.01, bbox_cost=0.0, giou_cost=2.0),
                      scores, pred_boxes, GT_BOXES, GT_LABELS)
    assert by_class == [0, 1]
    assert by_box == [1, 0]
    assert by_giou == [1, 0]


def test_matcher_costs_do_not_change_agreeing_case():
    scores = torch.tensor([[6., -6.], [-6., 6.], [0., 0.]])
    pred_boxes = torch.tensor([[11., 9., 31., 29.], [61., 59., 91., 88.], [40., 40., 50., 50.]])
    for class_cost, bbox_cost in [(10.0, 0.01), (0.01, 10.0), (2.0, 5.0)]:
        assert _assign(_assigner(class_cost=class_cost, bbox_cost=bbox_cost), scores,
                       pred_boxes, GT_BOXES, GT_LABELS) == [0, 1, -1]


def test_matcher_alpha_gamma_are_separate_from_loss():
    cfg = Config.fromfile(R18)
    cfg.merge_from_dict({'model.bbox_head.loss_cls.alpha': 0.6,
                         'model.bbox_head.loss_cls.gamma': 1.0})
    cost = cfg.model.train_cfg.assigner.match_costs[0]
    assert (cost.alpha, cost.gamma) == (0.25, 2.0)
    assigner = _assigner(**{'model.train_cfg.assigner.match_costs.0.alpha': 0.5,
                            'model.train_cfg.assigner.match_costs.0.gamma': 1.0})
    assert (assigner.match_costs[0].alpha, assigner.match_costs[0].gamma) == (0.5, 1.0)


# ------------------------------------------------------------- precision
def test_bf16_autocast_extreme_logits_loss_is_fp32(batch):
    """Under bf16 autocast the loss is computed in fp32: with logits of
    +-90 (exp overflows fp16, bf16 keeps ~3 digits) it is finite and equal
    to the fp32 loss of the same (bf16-representable) logits."""
    _, labels, ious = batch
    logits = torch.tensor([[90., -90., 45.], [-90., 90., 0.5]] * 3).to(torch.bfloat16)
    for family in ('vfl', 'focal', 'bce'):
        loss = _loss(loss_type=family)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            mixed = loss(logits, labels, ious, AVG)
        ref = loss(logits.float(), labels, ious, AVG)
        assert mixed.dtype == torch.float32 and torch.isfinite(mixed)
        assert mixed.item() == pytest.approx(ref.item(), rel=1e-6)


def test_bf16_training_losses_track_fp32():
    """Three AdamW steps of a small R18 model under bf16 autocast
    (RTDETRv2AmpOptimWrapper, CPU): before each step the fp32 loss of the
    same weights, batch and random draws is computed; every bf16 loss term
    is finite and the total within 6% of fp32. bf16 keeps 8 mantissa bits
    (~0.4% per rounding, through ~20 layers), and an untrained model's
    Hungarian matching is full of near-ties that this rounding can flip:
    measured here 0.1-3.6% (the loss itself is fp32, see the test above)."""
    shape = (128, 128)
    boxes, labels = random_gts([3, 2], shape, num_classes=80, seed=2)
    inputs = (torch.rand(2, 3, *shape) * 255).round()
    torch.manual_seed(0)
    model = build_model(R18, num_queries=30, num_denoising=20, num_layers=2)
    model.train()
    wrapper = RTDETRv2AmpOptimWrapper(torch.optim.AdamW(model.parameters(), lr=1e-4),
                                      dtype='bfloat16')
    pairs = []
    for step in range(3):
        data = dict(inputs=[img for img in inputs],
                    data_samples=data_samples(boxes, labels, shape))
        torch.manual_seed(100 + step)  # denoising noise
        random.seed(100 + step)  # multi-scale size (RTDETRv2BatchResize)
        with torch.no_grad():
            batch = model.data_preprocessor(data, True)
            fp32, _ = model.parse_losses(model(**batch, mode='loss'))
        torch.manual_seed(100 + step)
        random.seed(100 + step)
        log_vars = model.train_step(data, wrapper)
        assert all(math.isfinite(float(v)) for v in log_vars.values()), log_vars
        pairs.append((fp32.item(), float(log_vars['loss'])))
    for fp32, bf16 in pairs:
        assert bf16 == pytest.approx(fp32, rel=0.06), pairs
