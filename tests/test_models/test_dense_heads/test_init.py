"""The head starts from the official RT-DETRv2 initialisation, also after
init_weights() (what the runner calls before load_from)."""
import math

import torch

from rtdetr_mm.testing.model_utils import build_model


def test_official_head_initialisation():
    model = build_model(num_classes=7)
    model.init_weights()
    head = model.bbox_head
    prior = -math.log((1 - 0.01) / 0.01)
    for score_head in [head.enc_score_head, *head.dec_score_head]:
        torch.testing.assert_close(score_head.bias, torch.full((7,), prior))
    for box_head in [head.enc_bbox_head, *head.dec_bbox_head]:
        assert torch.count_nonzero(box_head.layers[-1].weight) == 0
        assert torch.count_nonzero(box_head.layers[-1].bias) == 0
    attn = head.decoder.layers[0].cross_attn
    assert torch.count_nonzero(attn.sampling_offsets.weight) == 0
    assert torch.count_nonzero(attn.attention_weights.weight) == 0
    # Head h points in direction 2*pi*h/8 (max-normalised), point k at distance k.
    grid = attn.sampling_offsets.bias.reshape(8, 12, 2)
    assert torch.allclose(grid[0, :4], torch.tensor([[1., 0.], [2., 0.], [3., 0.], [4., 0.]]))
    assert torch.allclose(grid[2, 0], torch.tensor([0., 1.]), atol=1e-6)
    assert torch.allclose(grid[1, 1], torch.tensor([2., 2.]), atol=1e-6)
    assert torch.equal(attn.num_points_scale, torch.tensor([0.25] * 12))
    # The denoising padding label embeds to zero.
    assert torch.count_nonzero(head.denoising_class_embed.weight[7]) == 0
