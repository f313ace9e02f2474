"""Training loss equals transformers' RT-DETRv2 loss term by term, and the
denoising terms equal an independent computation."""
import os.path as osp

import pytest
import torch
from mmdet.structures.bbox import bbox_xyxy_to_cxcywh

from rtdetr_mm.testing.hf_reference import build_hf_model
from rtdetr_mm.testing.model_utils import ROOT, build_model, data_samples, random_gts

SHAPE = (256, 320)  # non-square on purpose


R50 = osp.join(ROOT, 'configs/rtdetrv2/rtdetrv2_r50vd_4xb4-72e_coco.py')


def _converted_model(hf_model, tmp_path, config=None, **head_overrides):
    from rtdetr_mm.converters.rtdetrv2 import load_source
    hf_model.save_pretrained(str(tmp_path / 'hf'))
    state, _, _ = load_source(str(tmp_path / 'hf'))
    model = build_model(config, **head_overrides) if config else build_model(**head_overrides)
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(k.endswith('num_batches_tracked') for k in missing), \
        (missing, unexpected)
    return model


def test_loss_matches_transformers(tmp_path):
    torch.manual_seed(0)
    images = torch.rand(2, 3, *SHAPE)
    # r50vd: frozen backbone BN on both sides, so train mode differs only in
    # the (batch-statistics) neck BN, computed identically.
    hf = build_hf_model('r50vd', seed=0, image=images, num_denoising=0)
    ours = _converted_model(hf, tmp_path, R50, dn_cfg=dict(num_denoising=0))
    boxes, labels = random_gts([4, 7], SHAPE)
    h, w = SHAPE
    scale = torch.tensor([w, h, w, h])
    hf_labels = [dict(class_labels=l, boxes=bbox_xyxy_to_cxcywh(b / scale)) for b, l in zip(boxes, labels)]

    hf.train()
    hf_losses = hf(pixel_values=images, labels=hf_labels).loss_dict
    ours.train()
    our_losses = ours.loss(images, data_samples(boxes, labels, SHAPE))

    num_layers = 6
    pairs = {}
    for ours_name, hf_name in (('loss_cls', 'loss_vfl'), ('loss_bbox', 'loss_bbox'),
                               ('loss_iou', 'loss_giou')):
        pairs[ours_name] = hf_name
        for i in range(num_layers - 1):
            pairs[f'd{i}.{ours_name}'] = f'{hf_name}_aux_{i}'
        pairs[f'enc_{ours_name}'] = f'{hf_name}_aux_{num_layers - 1}'
    assert set(pairs.values()) == set(hf_losses), sorted(hf_losses)
    assert set(pairs) == set(our_losses), sorted(our_losses)
    for ours_name, hf_name in pairs.items():
        a, b = our_losses[ours_name].item(), hf_losses[hf_name].item()
        print(ours_name, hf_name, a, b)
    for ours_name, hf_name in pairs.items():
        a, b = our_losses[ours_name].item(), hf_losses[hf_name].item()
        assert abs(a - b) <= 1e-5 * abs(b) + 1e-7, (ours_name, a, b)


def _box_iou_giou(a, b):
    """Independent IoU / GIoU of aligned xyxy boxes."""
    lt, rb = torch.max(a[:, :2], b[:, :2]), torch.min(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a, area_b = (a[:, 2:] - a[:, :2]).prod(-1), (b[:, 2:] - b[:, :2]).prod(-1)
    union = area_a + area_b - inter
    iou = inter / union
    hull = (torch.max(a[:, 2:], b[:, 2:]) - torch.min(a[:, :2], b[:, :2])).prod(-1)
    return iou, iou - (hull - union) / hull


def test_denoising_terms_match_independent_computation():
    torch.manual_seed(1)
    model = build_model(dn_cfg=dict(num_denoising=20))
    model.train()
    head = model.bbox_head
    images = torch.rand(2, 3, *SHAPE)
    boxes, labels = random_gts([3, 1], SHAPE, seed=3)
    samples = data_samples(boxes, labels, SHAPE)
    feats = model.extract_feat(images)
    gt_labels, gt_boxes, shapes = head._normalised_gts(samples)
    outs = head(feats, gt_labels, gt_boxes)
    losses = head.loss_by_feat(outs, gt_labels, gt_boxes, shapes)

    meta = outs.dn_meta
    max_gt, groups = 3, 20 // 3
    assert meta.num_groups == groups and meta.num_dn_queries == 2 * max_gt * groups
    for i, n in enumerate([3, 1]):
        expected = torch.tensor([g * 2 * max_gt + j for g in range(groups) for j in range(n)])
        assert torch.equal(meta.positive_idx[i], expected)

    h, w = SHAPE
    scale = torch.tensor([w, h, w, h])
    normaliser = 4 * groups
    for layer in range(outs.dn_cls_scores.shape[0]):
        prefix = 'dn_' if layer == outs.dn_cls_scores.shape[0] - 1 else f'd{layer}.dn_'
        vfl = l1 = giou_loss = 0.0
        for i in range(2):
            logits = outs.dn_cls_scores[layer, i].detach()
            pred = outs.dn_bbox_preds[layer, i].detach()
            target = torch.zeros_like(logits)
            weight_pos = torch.zeros_like(logits)
            for k, q in enumerate(meta.positive_idx[i].tolist()):
                g = k % len(gt_labels[i])
                p_xyxy = torch.cat([pred[q, :2] - pred[q, 2:] / 2, pred[q, :2] + pred[q, 2:] / 2]) * scale
                iou, giou = _box_iou_giou(p_xyxy[None], boxes[i][g][None])
                target[q, gt_labels[i][g]] = iou.item()
                weight_pos[q, gt_labels[i][g]] = 1
                l1 += (pred[q] - gt_boxes[i][g]).abs().sum().item()
                giou_loss += (1 - giou).item()
            p = logits.sigmoid()
            weight = 0.75 * p.pow(2) * (1 - weight_pos) + target
            bce = -(target * torch.log(p) + (1 - target) * torch.log(1 - p))
            vfl += (weight * bce).sum().item()
        assert losses[prefix + 'loss_cls'].item() == pytest.approx(vfl / normaliser, rel=1e-4)
        assert losses[prefix + 'loss_bbox'].item() == pytest.approx(5 * l1 / normaliser, rel=1e-4)
        assert losses[prefix + 'loss_iou'].item() == pytest.approx(2 * giou_loss / normaliser,
                                                                   rel=1e-4)
