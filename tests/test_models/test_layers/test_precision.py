"""What runs in which dtype (issue 15, items 4 and 5), where a CPU can show it.

- fp16 overflow guard: a decoder / AIFI layer whose FFN output overflows
  fp16 (checked: the raw FFN output holds inf) returns finite values under
  fp16 autocast and as an fp16 model; fp32 is not clamped.
- FrozenBatchNorm2d keeps fp16 / bf16 activations in their dtype.
- Anchors and their valid mask: under bf16 autocast equal to fp32 (values
  and mask); for a bf16 model (no autocast) the mask is still fp32's. The
  valid counts at 640 px are typed in from the rule (cell centre inside
  (0.01, 0.99)).
"""
import pytest
import torch

from rtdetr_mm.models.layers.aifi_layer import AIFILayer
from rtdetr_mm.models.layers.anchors import generate_anchors
from rtdetr_mm.models.layers.frozen_bn import FrozenBatchNorm2d
from rtdetr_mm.models.layers.precision import (FP16_MAX, clamp_fp16_overflow, compute_dtype,
                                               value_dtype)
from rtdetr_mm.models.layers.rtdetrv2_decoder import RTDETRv2DecoderLayer

D = 32


def _overflowing_(linear2: torch.nn.Linear) -> None:
    """Make output channel 0 of the FFN ~1e4 * sum of the hidden units: far
    beyond fp16's 65504 for any input with some active unit."""
    with torch.no_grad():
        linear2.weight.zero_()
        linear2.weight[0].fill_(1e4)
        linear2.bias.zero_()


def _decoder_layer():
    torch.manual_seed(0)
    layer = RTDETRv2DecoderLayer(hidden_dim=D, num_heads=2, dim_feedforward=64, num_levels=1,
                                 num_points=2).eval()
    _overflowing_(layer.linear2)
    return layer


def _decoder_inputs(dtype=torch.float32):
    gen = torch.Generator().manual_seed(1)
    target = torch.randn(1, 5, D, generator=gen)
    boxes = torch.rand(1, 5, 1, 4, generator=gen) * 0.5 + 0.25
    memory = torch.randn(1, 16, D, generator=gen)
    query_pos = torch.randn(1, 5, D, generator=gen)
    return [t.to(dtype) for t in (target, boxes, memory)] + [[(4, 4)], None, query_pos.to(dtype)]


def _ffn_of_decoder(layer, target):
    return layer.linear2(layer.activation(layer.linear1(target)))


def test_clamp_only_in_fp16():
    x = torch.tensor([1e6, -1e6, float('inf'), 3.0])
    assert clamp_fp16_overflow(x) is x  # fp32, no autocast: untouched
    assert clamp_fp16_overflow(x.double()).tolist() == [1e6, -1e6, float('inf'), 3.0]
    assert clamp_fp16_overflow(x.half()).tolist() == [FP16_MAX, -FP16_MAX, FP16_MAX, 3.0]
    with torch.autocast('cpu', dtype=torch.float16):
        assert clamp_fp16_overflow(x).tolist() == [FP16_MAX, -FP16_MAX, FP16_MAX, 3.0]
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert clamp_fp16_overflow(x) is x  # bf16 has fp32's range


def test_decoder_layer_stays_finite_when_its_ffn_overflows_fp16():
    layer = _decoder_layer()
    inputs = _decoder_inputs()
    with torch.no_grad():
        assert torch.isfinite(layer(*inputs)).all()  # fp32: large but finite
        with torch.autocast('cpu', dtype=torch.float16):
            # precondition: the FFN itself overflows in fp16
            assert torch.isinf(_ffn_of_decoder(layer, inputs[0])).any()
            out = layer(*inputs)
    assert torch.isfinite(out).all()


def test_aifi_layer_stays_finite_when_its_ffn_overflows_fp16():
    torch.manual_seed(0)
    layer = AIFILayer(D, 2, dim_feedforward=64).eval()
    _overflowing_(layer.linear2)
    gen = torch.Generator().manual_seed(2)
    src, pos = torch.randn(2, 9, D, generator=gen), torch.randn(1, 9, D, generator=gen)
    with torch.no_grad():
        assert torch.isfinite(layer(src, pos)).all()
        with torch.autocast('cpu', dtype=torch.float16):
            ffn = layer.linear2(layer.activation(layer.linear1(src)))
            assert torch.isinf(ffn).any()
            out = layer(src, pos)
        assert torch.isfinite(out).all()
        # an fp16 model (no autocast) likewise
        half = layer.half()
        assert torch.isinf(half.linear2(half.activation(half.linear1(src.half())))).any()
        out = half(src.half(), pos.half())
    assert out.dtype == torch.float16 and torch.isfinite(out).all()


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_frozen_bn_keeps_the_activation_dtype(dtype):
    gen = torch.Generator().manual_seed(0)
    bn = FrozenBatchNorm2d(4)
    for name in ('weight', 'bias', 'running_mean'):
        getattr(bn, name).copy_(torch.randn(4, generator=gen))
    bn.running_var.copy_(torch.rand(4, generator=gen) + 0.5)
    x = torch.randn(2, 4, 3, 3, generator=gen)
    # the formula, by hand, in float64
    ref = ((x.double() - bn.running_mean.double()[:, None, None])
           / (bn.running_var.double()[:, None, None] + bn.eps).sqrt()
           * bn.weight.double()[:, None, None] + bn.bias.double()[:, None, None])
    out = bn(x.to(dtype))
    assert out.dtype == dtype
    torch.testing.assert_close(out.double(), ref, rtol=2e-2, atol=5e-2)
    assert bn(x).dtype == torch.float32


def test_dtype_rules():
    assert compute_dtype(torch.float16) == compute_dtype(torch.bfloat16) == torch.float32
    assert compute_dtype(torch.float64) == torch.float64
    assert value_dtype(torch.bfloat16) == torch.bfloat16          # a bf16 model
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert value_dtype(torch.bfloat16) == torch.float32       # autocast activations
        assert value_dtype(torch.float64) == torch.float64
        assert value_dtype(torch.bfloat16, 'meta') == torch.bfloat16


def _stride_shapes(size):
    return [(size // s, size // s) for s in (8, 16, 32)]


def test_valid_anchor_count_at_640_by_hand():
    """640 px: stride 8 (80x80) keeps cells 1..78 per axis (0.5/80 < 0.01,
    79.5/80 > 0.99): 78^2; stride 16 (40x40) and 32 (20x20) keep all (the
    last centre 39.5/40 = 0.9875 < 0.99): 6084 + 1600 + 400."""
    _, valid = generate_anchors(_stride_shapes(640))
    assert int(valid.sum()) == 78 * 78 + 1600 + 400


@pytest.mark.parametrize('size', [608, 640, 704, 768])
def test_anchors_under_bf16_autocast_equal_fp32(size):
    shapes = _stride_shapes(size)
    ref_anchors, ref_valid = generate_anchors(shapes)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        anchors, valid = generate_anchors(shapes, dtype=torch.bfloat16)
    assert anchors.dtype == torch.float32
    assert torch.equal(valid, ref_valid)
    assert torch.equal(anchors, ref_anchors)
    # a bf16 model (no autocast): bf16 logits, but the mask computed in fp32
    anchors, valid = generate_anchors(shapes, dtype=torch.bfloat16)
    assert anchors.dtype == torch.bfloat16 and torch.equal(valid, ref_valid)
    # what the mask would be in bf16: the last row and column of stride 16
    # turn invalid (so this test can tell the two apart)
    h = size // 16
    centre = ((torch.arange(h, dtype=torch.bfloat16) + 0.5) / h)[-1]
    assert not bool(centre < 1 - 0.01)
