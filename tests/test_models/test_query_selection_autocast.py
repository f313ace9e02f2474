"""Query selection under bf16 autocast selects what fp32 selects (issue 15
item 5, "anchors in the autocast dtype").

A small RT-DETRv2 head with hand-set weights (identity input projections
and encoder output, a class-0 score that reads channel 0 of the normalised
token) gets neck maps at the strides of a 640 / 704 px input. Every token
is ``[cos t, sin t, -cos t, -sin t, 0, ...]`` (mean 0, fixed norm, so the
LayerNorm scales it by sqrt(D / 2) and the class-0 logit is
``sqrt(D / 2) * cos t``); 20 tokens of the last row and column of the
stride-16 map (the ones a bf16 valid mask drops) get ``cos t = 1 - 0.04 j``
for j = 0..19, all others ``cos t = 0``. So the selected top-20 is, by
construction, those 20 tokens in order j (logit gaps of 0.16, far above bf16
rounding). Both runs must select exactly them, and zero (mask) exactly the
same tokens before the encoder output.
"""
import math

import pytest
import torch
from mmdet.registry import MODELS
from mmengine.config import Config
from torch.utils._python_dispatch import TorchDispatchMode

import rtdetr_mm  # noqa: F401  (registers the head)
from rtdetr_mm.testing.model_utils import R18

D = 32
K = 20


class _TopkRecorder(TorchDispatchMode):
    """Records the indices of every ``aten.topk``."""

    def __init__(self):
        super().__init__()
        self.indices = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket.__name__ == 'topk':
            self.indices.append(out[1].clone())
        return out


@pytest.fixture(scope='module')
def head():
    cfg = Config.fromfile(R18).model.bbox_head
    cfg.update(num_classes=2, in_channels=(D, D, D), hidden_dim=D, num_heads=2, num_layers=1,
               dim_feedforward=64, num_queries=K, dn_cfg=None, test_cfg=dict(max_per_img=K))
    head = MODELS.build(cfg).eval()
    with torch.no_grad():
        for proj in head.input_proj:
            proj.conv.weight.copy_(torch.eye(D).reshape(D, D, 1, 1))
            proj.norm.reset_parameters()
            proj.norm.reset_running_stats()
        head.enc_output.proj.weight.copy_(torch.eye(D))
        head.enc_output.proj.bias.zero_()
        head.enc_output.norm.reset_parameters()
        head.enc_score_head.weight.zero_()
        head.enc_score_head.weight[0, 0] = 1.0
        head.enc_score_head.bias.zero_()
    return head


def _feats(size):
    """Neck maps (1, D, H_l, W_l) of a size x size input and the flat token
    indices of the 20 chosen tokens, in order of their logit."""
    shapes = [(size // s, size // s) for s in (8, 16, 32)]
    cos = [torch.zeros(h, w) for h, w in shapes]
    h, w = shapes[1]
    cells = [(y, w - 1) for y in range(h)] + [(h - 1, x) for x in range(w - 1)]
    cells = cells[::max(1, len(cells) // K)][:K]
    offset = shapes[0][0] * shapes[0][1]
    expected = []
    for j, (y, x) in enumerate(cells):
        cos[1][y, x] = 1 - 0.04 * j
        expected.append(offset + y * w + x)
    feats = []
    for c in cos:
        s = (1 - c ** 2).sqrt()
        f = torch.zeros(1, D, *c.shape)
        f[0, 0], f[0, 1], f[0, 2], f[0, 3] = c, s, -c, -s
        feats.append(f)
    return feats, expected


def _run(head, feats, autocast):
    zero_rows = []
    handle = head.enc_output.register_forward_pre_hook(
        lambda module, args: zero_rows.append((args[0][0].abs().sum(-1) == 0).clone()))
    try:
        with torch.no_grad(), _TopkRecorder() as recorder, \
                torch.autocast('cpu', dtype=torch.bfloat16, enabled=autocast):
            head(feats)
    finally:
        handle.remove()
    return zero_rows[0], recorder.indices[0][0]


@pytest.mark.parametrize('size', [640, 704])
def test_bf16_autocast_selects_the_fp32_tokens(head, size):
    feats, expected = _feats(size)
    masked_fp32, topk_fp32 = _run(head, feats, autocast=False)
    masked_bf16, topk_bf16 = _run(head, feats, autocast=True)
    assert topk_fp32.tolist() == expected  # the construction works in fp32
    assert torch.equal(masked_bf16, masked_fp32)
    assert topk_bf16.tolist() == expected
    # the logit gap is far above bf16's rounding at this scale
    assert 0.04 * math.sqrt(D / 2) > 4 * 2 ** -7
