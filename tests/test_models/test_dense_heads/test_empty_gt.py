"""Forward/backward with images without GT: every parameter gets a gradient
(DDP can run with find_unused_parameters=False)."""
import pytest
import torch

from rtdetr_mm.testing.model_utils import build_model, data_samples, random_gts

SHAPE = (128, 160)


@pytest.mark.parametrize('num_gts', [[3, 0], [0, 0]], ids=['one-image-empty', 'all-empty'])
def test_every_parameter_gets_a_gradient(num_gts):
    torch.manual_seed(0)
    model = build_model()
    model.train()
    boxes, labels = random_gts(num_gts, SHAPE)
    losses = model.loss(torch.rand(2, 3, *SHAPE), data_samples(boxes, labels, SHAPE))
    total = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    if sum(num_gts) == 0:
        assert losses['loss_bbox'].item() == 0 and losses['loss_cls'].item() > 0


def _decode_by_hand(cls_logits, boxes_cxcywh, shape, k):
    """Top-k over the sigmoid scores of all (query, class) pairs of one
    image; cxcywh normalised -> xyxy pixels of the (h, w) network input."""
    num_classes = cls_logits.shape[-1]
    scores, index = cls_logits.sigmoid().flatten().topk(k)
    labels, query = index % num_classes, index // num_classes
    cx, cy, bw, bh = boxes_cxcywh[query].unbind(-1)
    h, w = shape
    xyxy = torch.stack([(cx - bw / 2) * w, (cy - bh / 2) * h,
                        (cx + bw / 2) * w, (cy + bh / 2) * h], -1)
    return xyxy, scores, labels


def test_predict_shapes_and_rescale():
    """``rescale=False`` gives an independent decoding of the head's raw
    output (pixels of the non-square input, so w and h cannot be swapped
    unnoticed); ``rescale=True`` with ``scale_factor`` (w, h) = (0.5, 0.25)
    divides exactly x by 0.5 and y by 0.25."""
    torch.manual_seed(0)
    model = build_model()
    model.reparameterize = False  # the decoding of this model's head; the fused copy: test_reparameterize
    model.eval()
    inputs = torch.rand(1, 3, *SHAPE)
    results = {}
    for rescale in (False, True):
        samples = data_samples([torch.zeros(0, 4)], [torch.zeros(0)], SHAPE)
        samples[0].set_metainfo(dict(scale_factor=(0.5, 0.25)))
        with torch.no_grad():
            results[rescale] = model.predict(inputs, samples, rescale=rescale)[0].pred_instances
    plain, rescaled = results[False], results[True]
    assert plain.bboxes.shape == (300, 4) and plain.scores.shape == (300,)
    assert rescaled.bboxes.shape == (300, 4)
    assert torch.all(plain.scores[:-1] >= plain.scores[1:])

    # independent decoding of the head's raw output
    with torch.no_grad():
        outs = model.bbox_head(model.extract_feat(inputs))
    logits, boxes = outs.cls_scores[-1][0], outs.bbox_preds[-1][0]
    assert logits.shape == (300, 80) and boxes.shape == (300, 4)
    xyxy, scores, labels = _decode_by_hand(logits, boxes, SHAPE, 300)
    assert torch.equal(plain.labels, labels)
    torch.testing.assert_close(plain.scores, scores, rtol=0, atol=1e-6)
    torch.testing.assert_close(plain.bboxes, xyxy, rtol=0, atol=1e-4)
    # sanity: the input is not square, so swapping w and h moves the boxes
    swapped = _decode_by_hand(logits, boxes, SHAPE[::-1], 300)[0]
    assert (swapped - xyxy).abs().max() > 1

    # rescaled = unrescaled / scale_factor, x by 0.5 and y by 0.25
    assert torch.equal(rescaled.labels, plain.labels)
    torch.testing.assert_close(rescaled.scores, plain.scores, rtol=0, atol=0)
    torch.testing.assert_close(rescaled.bboxes[:, 0::2], plain.bboxes[:, 0::2] / 0.5,
                               rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(rescaled.bboxes[:, 1::2], plain.bboxes[:, 1::2] / 0.25,
                               rtol=1e-6, atol=1e-4)
