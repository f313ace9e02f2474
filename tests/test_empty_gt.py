"""Forward/backward with images without GT: every parameter gets a gradient
(DDP can run with find_unused_parameters=False)."""
import pytest
import torch

from model_utils import build_model, data_samples, random_gts

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


def test_predict_shapes_and_rescale():
    model = build_model()
    model.eval()
    samples = data_samples([torch.zeros(0, 4)], [torch.zeros(0)], SHAPE)
    samples[0].set_metainfo(dict(scale_factor=(0.5, 0.25)))
    with torch.no_grad():
        results = model.predict(torch.rand(1, 3, *SHAPE), samples)
    pred = results[0].pred_instances
    assert pred.bboxes.shape == (300, 4) and pred.scores.shape == (300,)
    assert torch.all(pred.scores[:-1] >= pred.scores[1:])
    # Rescaled to the original image: x / 0.5, y / 0.25.
    assert pred.bboxes[:, 0::2].max() <= SHAPE[1] / 0.5 + 1e-3
    assert pred.bboxes[:, 1::2].max() > SHAPE[0]  # y stretched by 4
