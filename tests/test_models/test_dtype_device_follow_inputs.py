"""Every tensor the model creates follows its inputs' dtype and device
(issue 15 item 4), checked where a CPU can check it.

- dtype: a float64 tiny r18 model with float64 images and GT boxes; a
  ``TorchDispatchMode`` records every floating-point tensor any aten op
  produces (forward, backward, factories such as ``torch.tensor`` /
  ``arange`` / ``zeros``) that is not float64. A tensor created as fp32 (the
  default dtype) or a ``.float()`` inside would show up; none may.
  Our layers' path (backbone, neck, head forward with denoising and
  anchors, the batched matcher, the classification loss, the
  post-processor, backward) is checked as a whole, and so are the
  detector's full ``loss`` / ``predict`` (the head's own loss and
  prediction code).
- device: the same model moved to the ``meta`` device runs on meta inputs:
  a tensor created on the CPU (no ``device=``) and combined with a meta
  tensor raises, so every creation must follow its inputs' device. Data
  dependent reads (matching, ``.item()``, the ONNX wrapper's
  ``allclose``) cannot run on meta, so the training forward stops before
  the matching and the export is checked up to its example inputs.

What a CPU cannot check here: CUDA kernels and their dtypes under autocast,
non-blocking copies and streams, and whether a CUDA tensor is ever read on
the host (counted instead by ``rtdetr_mm/testing/op_counter``).
"""
import copy
from collections import Counter

import pytest
import torch
from mmdet.structures.bbox import bbox_xyxy_to_cxcywh
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from rtdetr_mm.deployment.onnx_export import example_inputs, model_device
from rtdetr_mm.models.layers.postprocess import topk_detections
from rtdetr_mm.testing.model_utils import build_model, data_samples, random_gts

SHAPE = (64, 96)
NUM_CLASSES = 3


class _DtypeRecorder(TorchDispatchMode):
    """Counts (op, dtype) of every floating-point output that is not
    float64."""

    def __init__(self):
        super().__init__()
        self.other = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != torch.float64:
                self.other[f'{func.overloadpacket.__name__}->{t.dtype}'] += 1
        return out


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    return build_model(num_classes=NUM_CLASSES, num_queries=12, num_layers=2,
                       dn_cfg=dict(num_denoising=8))


def _batch(dtype, device='cpu'):
    gen = torch.Generator().manual_seed(3)
    images = torch.rand(2, 3, *SHAPE, generator=gen).to(device=device, dtype=dtype)
    boxes, labels = random_gts([3, 1], SHAPE, num_classes=NUM_CLASSES, seed=3)
    samples = data_samples(boxes, labels, SHAPE)
    for sample in samples:
        sample.gt_instances.bboxes = sample.gt_instances.bboxes.to(device=device, dtype=dtype)
        sample.gt_instances.labels = sample.gt_instances.labels.to(device)
    h, w = SHAPE
    scale = torch.tensor([w, h, w, h], dtype=dtype, device=device)
    gt_boxes = [bbox_xyxy_to_cxcywh(b.to(device=device, dtype=dtype) / scale) for b in boxes]
    return images, samples, [lab.to(device) for lab in labels], gt_boxes


def _our_training_step(model, images, gt_labels, gt_boxes):
    """Backbone -> neck -> head forward (denoising, anchors, decoder) ->
    batched matching -> classification loss + L1 of the matched boxes ->
    backward: our layers, without the head's own loss code."""
    head = model.bbox_head
    outs = head(model.extract_feat(images), gt_labels, gt_boxes)
    scores = torch.cat([outs.cls_scores, outs.enc_cls_scores[None]])
    boxes = torch.cat([outs.bbox_preds, outs.enc_bbox_preds[None]])
    pairs = head.assigner.match_batch(scores, boxes, gt_labels, gt_boxes)
    labels = torch.full(scores.shape[:3], NUM_CLASSES, dtype=torch.long)
    labels[pairs.stage, pairs.batch, pairs.query] = torch.cat(gt_labels)[pairs.gt]
    iou_targets = scores.new_zeros(scores.shape[:3])
    iou_targets[pairs.stage, pairs.batch, pairs.query] = images.new_tensor(0.5)
    avg_factor = images.new_tensor(4.0)
    loss = head.loss_cls(scores.flatten(1, 2), labels.flatten(1), iou_targets.flatten(1),
                         avg_factor=avg_factor).sum()
    matched = boxes[pairs.stage, pairs.batch, pairs.query]
    loss = loss + (matched - torch.cat(gt_boxes)[pairs.gt]).abs().sum()
    loss = loss + outs.dn_bbox_preds.sum() + outs.dn_cls_scores.sum()
    loss.backward()
    return loss


def test_float64_model_stays_float64_through_our_layers(model):
    model64 = copy.deepcopy(model).double().train()
    images, _, gt_labels, gt_boxes = _batch(torch.float64)
    with _DtypeRecorder() as recorder:
        loss = _our_training_step(model64, images, gt_labels, gt_boxes)
    assert loss.dtype == torch.float64
    assert not recorder.other, dict(recorder.other)
    grads = [p.grad for p in model64.parameters() if p.grad is not None]
    assert len(grads) > 100 and all(g.dtype == torch.float64 for g in grads)

    model64.eval()
    with torch.no_grad(), _DtypeRecorder() as recorder:
        outs = model64.bbox_head(model64.extract_feat(images))
        labels, boxes, scores = topk_detections(outs.cls_scores[-1], outs.bbox_preds[-1],
                                                images.new_tensor([[SHAPE[1], SHAPE[0]]]),
                                                NUM_CLASSES, 10)
    assert boxes.dtype == scores.dtype == torch.float64
    assert not recorder.other, dict(recorder.other)


def test_float64_model_full_loss_and_predict(model):
    model64 = copy.deepcopy(model).double().train()
    images, samples, _, _ = _batch(torch.float64)
    with _DtypeRecorder() as recorder:
        losses = model64.loss(images, samples)
        sum(losses.values()).backward()
        model64.eval()
        with torch.no_grad():
            results = model64.predict(images, samples)
    assert all(v.dtype == torch.float64 for v in losses.values())
    assert results[0].pred_instances.bboxes.dtype == torch.float64
    assert not recorder.other, dict(recorder.other)


def test_meta_device_model_creates_every_tensor_on_meta(model):
    meta = copy.deepcopy(model).to('meta').train()
    images, _, gt_labels, gt_boxes = _batch(torch.float32, device='meta')
    outs = meta.bbox_head(meta.extract_feat(images), gt_labels, gt_boxes)
    assert outs.cls_scores.device.type == 'meta' and outs.dn_bbox_preds.device.type == 'meta'
    assert outs.enc_bbox_preds.device.type == 'meta'

    meta.eval()
    with torch.no_grad():
        outs = meta.bbox_head(meta.extract_feat(images))
        labels, boxes, scores = topk_detections(outs.cls_scores[-1], outs.bbox_preds[-1],
                                                images.new_tensor([[SHAPE[1], SHAPE[0]]]),
                                                NUM_CLASSES, 10)
        assert boxes.device.type == 'meta' and labels.device.type == 'meta'
        # the ONNX export traces with example inputs on the model's device
        assert model_device(meta) == torch.device('meta')
        example, sizes = example_inputs(2, SHAPE, device=model_device(meta))
        assert example.device.type == sizes.device.type == 'meta'
        outs = meta.bbox_head(meta.extract_feat(example))
    assert outs.cls_scores.device.type == 'meta'
