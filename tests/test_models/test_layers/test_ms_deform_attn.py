"""``MSDeformableAttentionV2`` (default, bilinear path) against a direct
per-point computation written here.

The reference (the official ``MSDeformableAttention`` with 4-d reference
boxes and ``deformable_attention_core_func_v2``, method ``default``):

- ``v = value_proj(value)``, split into heads;
- raw offsets ``o = sampling_offsets(query)`` per (head, point, xy);
  weights ``a = softmax(attention_weights(query))`` per head, *jointly over
  all levels' points*;
- point p of level l is at ``ref_cxcy + o / P_l * ref_wh * offset_scale``;
- sampling is ``F.grid_sample(bilinear, zeros, align_corners=False)`` at
  ``2 * loc - 1``: pixel coordinates ``loc * W - 0.5``, ``loc * H - 0.5``,
  four neighbours weighted by the fractional parts, a neighbour outside the
  map reads 0;
- head output ``sum_p a_p * sample_p``, heads concatenated, ``output_proj``.

Loops over batch, query, head, level and point with scalar arithmetic:
no grid_sample, no call into the module under test for the expected value.
``tests/test_models/test_layers/test_ms_deform_attn_discrete.py`` covers ``method='discrete'``.
"""
import math

import pytest
import torch

from rtdetr_mm.models.layers.ms_deform_attn_v2 import (MSDeformableAttentionV2,
                                                        ms_deform_attn_v2_core)


def _make(channels, heads, levels, points, offset_scale=0.5):
    """The channel count goes in positionally: the models refactor renames
    that argument (``embed_dim`` -> ``hidden_dim``); the others have mmdet's
    names already."""
    return MSDeformableAttentionV2(channels, num_heads=heads, num_levels=levels,
                                   num_points=points, offset_scale=offset_scale)


# --------------------------------------------------------------- reference
def _bilinear(plane, loc_x, loc_y):
    """Sample a (C, H, W) plane at normalised (loc_x, loc_y): align_corners
    False (pixel i covers [i, i + 1) / size, centre (i + 0.5) / size), zero
    outside the map."""
    _, h, w = plane.shape
    x = loc_x * w - 0.5
    y = loc_y * h - 0.5
    x0, y0 = math.floor(x), math.floor(y)
    fx, fy = x - x0, y - y0
    out = torch.zeros(plane.shape[0], dtype=plane.dtype)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            yy, xx = y0 + dy, x0 + dx
            if 0 <= yy < h and 0 <= xx < w:
                out += wy * wx * plane[:, yy, xx]
    return out


def _softmax(row):
    m = max(row)
    e = [math.exp(v - m) for v in row]
    s = sum(e)
    return [v / s for v in e]


def _reference(module, query, ref_boxes, value, shapes):
    """Per-point forward of the module's parameters, float64."""
    heads, points = module.num_heads, list(module.num_points_list)
    total = sum(points)
    level_of = [lvl for lvl, n in enumerate(points) for _ in range(n)]
    bs, nq, embed = query.shape
    hd = embed // heads
    W = {k: v.detach().double() for k, v in module.named_parameters()}
    v = value.double() @ W['value_proj.weight'].T + W['value_proj.bias']
    raw_off = query.double() @ W['sampling_offsets.weight'].T + W['sampling_offsets.bias']
    raw_att = query.double() @ W['attention_weights.weight'].T + W['attention_weights.bias']
    starts = [sum(h * w for h, w in shapes[:i]) for i in range(len(shapes))]
    out = torch.zeros(bs, nq, embed, dtype=torch.float64)
    locations = []
    for b in range(bs):
        for q in range(nq):
            cx, cy, bw, bh = ref_boxes[b, q, 0].double().tolist()
            for m in range(heads):
                att = _softmax([float(raw_att[b, q, m * total + p]) for p in range(total)])
                acc = torch.zeros(hd, dtype=torch.float64)
                for p in range(total):
                    lvl = level_of[p]
                    h, w = shapes[lvl]
                    ox = float(raw_off[b, q, (m * total + p) * 2])
                    oy = float(raw_off[b, q, (m * total + p) * 2 + 1])
                    lx = cx + ox / points[lvl] * bw * module.offset_scale
                    ly = cy + oy / points[lvl] * bh * module.offset_scale
                    locations.append((lx, ly))
                    rows = v[b, starts[lvl]:starts[lvl] + h * w, m * hd:(m + 1) * hd]
                    plane = rows.T.reshape(hd, h, w)
                    acc += att[p] * _bilinear(plane, lx, ly)
                out[b, q, m * hd:(m + 1) * hd] = acc
    out = out @ W['output_proj.weight'].T + W['output_proj.bias']
    return out, locations


def _randomise(module, gen, offset_bias=3.0):
    """Random weights everywhere (the official init gives uniform attention
    and a fixed ring of offsets, which would hide mistakes)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.3)
        module.sampling_offsets.bias.mul_(offset_bias / 0.3)
        module.attention_weights.weight.mul_(3.0)


SHAPES = [(5, 7), (3, 4), (2, 3)]  # non-square levels


@pytest.mark.parametrize('points', [2, [3, 1, 2]], ids=['int', 'per-level-list'])
def test_module_matches_per_point_bilinear_reference(points):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    embed, heads, bs, nq = 8, 2, 2, 6
    module = _make(embed, heads, len(SHAPES), points).double()
    _randomise(module, gen)
    num_tokens = sum(h * w for h, w in SHAPES)
    query = torch.randn(bs, nq, embed, generator=gen, dtype=torch.float64)
    value = torch.randn(bs, num_tokens, embed, generator=gen, dtype=torch.float64)
    cxcy = torch.rand(bs, nq, 1, 2, generator=gen, dtype=torch.float64)
    wh = torch.rand(bs, nq, 1, 2, generator=gen, dtype=torch.float64) * 0.6 + 0.1
    ref_boxes = torch.cat([cxcy, wh], -1)

    got = module(query, ref_boxes, value, SHAPES)
    expected, locations = _reference(module, query, ref_boxes, value, SHAPES)
    assert got.shape == (bs, nq, embed)
    # Not 1e-12: the buffer num_points_scale holds 1 / P_l as float32 (as the
    # official code), so 1/3 carries a relative error of ~1e-8 after .double().
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)
    # The case covers points off the map (partly, and entirely: beyond half a
    # pixel outside no neighbour is inside) as well as inside it.
    xs = torch.tensor([loc[0] for loc in locations])
    ys = torch.tensor([loc[1] for loc in locations])
    outside = (xs < 0) | (xs > 1) | (ys < 0) | (ys > 1)
    far = (xs < -0.5) | (xs > 1.5) | (ys < -0.5) | (ys > 1.5)
    assert outside.sum() >= 10 and far.sum() >= 3 and (~outside).sum() >= 10, (
        int(outside.sum()), int(far.sum()), len(locations))


def test_float32_module_matches_reference():
    """The float32 module (as trained) agrees to float32 precision."""
    gen = torch.Generator().manual_seed(2)
    module = _make(16, 4, 2, [2, 3])
    _randomise(module, gen)
    shapes = [(4, 6), (2, 3)]
    query = torch.randn(1, 5, 16, generator=gen)
    value = torch.randn(1, 30, 16, generator=gen)
    ref_boxes = torch.cat([torch.rand(1, 5, 1, 2, generator=gen),
                           torch.rand(1, 5, 1, 2, generator=gen) * 0.5 + 0.05], -1)
    expected, _ = _reference(module, query, ref_boxes, value, shapes)
    torch.testing.assert_close(module(query, ref_boxes, value, shapes).double(), expected,
                               rtol=1e-4, atol=1e-5)


def test_offset_scale_and_per_level_point_scaling():
    """offset_scale = 0.25 and a level with P_l = 4 next to one with P_l = 1:
    a point moves by raw / P_l * ref_wh * offset_scale."""
    gen = torch.Generator().manual_seed(3)
    module = _make(4, 1, 2, [4, 1], offset_scale=0.25).double()
    _randomise(module, gen, offset_bias=2.0)
    shapes = [(3, 5), (4, 2)]
    query = torch.randn(2, 3, 4, generator=gen, dtype=torch.float64)
    value = torch.randn(2, 23, 4, generator=gen, dtype=torch.float64)
    ref_boxes = torch.tensor([[0.4, 0.6, 0.5, 0.3]], dtype=torch.float64).expand(2, 3, 4)
    ref_boxes = ref_boxes.reshape(2, 3, 1, 4)
    expected, _ = _reference(module, query, ref_boxes, value, shapes)
    torch.testing.assert_close(module(query, ref_boxes, value, shapes), expected,
                               rtol=1e-9, atol=1e-9)


# ------------------------------------------------ the core, literal points
def test_core_bilinear_literal_points():
    """One head, one channel, a 2 x 3 map with values 1..6 (row-major):
    expected samples worked out by hand (align_corners=False: pixel (y, x)
    has its centre at ((x + 0.5) / 3, (y + 0.5) / 2))."""
    plane = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    value = torch.tensor(plane, dtype=torch.float64).reshape(1, 6, 1, 1)
    cases = [  # (loc_x, loc_y) -> sample
        ((0.5 / 3, 0.25), 1.0),             # centre of (0, 0)
        ((2.5 / 3, 0.75), 6.0),             # centre of (1, 2)
        ((1.0 / 3, 0.25), 1.5),             # halfway between (0, 0) and (0, 1)
        ((1.5 / 3, 0.5), 3.5),              # halfway between rows 0 and 1, column 1
        ((1.0 / 3, 0.5), 3.0),              # the four of (0..1, 0..1): (1+2+4+5)/4
        ((0.0, 0.25), 0.5),                 # left edge: half of pixel (0, 0), half zero
        ((0.0, 0.0), 0.25),                 # top-left corner: a quarter of pixel (0, 0)
        ((1.0, 1.0), 1.5),                  # bottom-right corner: a quarter of 6
        ((-0.1, 0.25), 0.2),                # x = -0.8 px: 0.2 of pixel (0, 0), 0.8 of zero
        ((1.2, 0.75), 0.0),                 # beyond the right edge by > half a pixel
        ((0.5, -0.3), 0.0),                 # above the map
        ((0.5, 1.26), 0.0),                 # below: y = 2.02 px, no neighbour inside
    ]
    locs = torch.tensor([c[0] for c in cases], dtype=torch.float64).reshape(1, len(cases), 1, 1, 2)
    weights = torch.ones(1, len(cases), 1, 1, dtype=torch.float64)
    out = ms_deform_attn_v2_core(value, [(2, 3)], locs, weights, [1])
    assert out.shape == (1, len(cases), 1)
    got = out[0, :, 0].tolist()
    assert got == pytest.approx([c[1] for c in cases], abs=1e-12), list(zip(cases, got))


def test_core_weights_sum_points_of_all_levels():
    """Two levels, three points; the output is the weighted sum of the three
    samples (weights as given, not renormalised per level)."""
    value = torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0], dtype=torch.float64).reshape(1, 5, 1, 1)
    shapes = [(2, 2), (1, 1)]
    # level 0: centres of (0, 0) and (1, 1); level 1: its only pixel.
    locs = torch.tensor([[0.25, 0.25], [0.75, 0.75], [0.5, 0.5]],
                        dtype=torch.float64).reshape(1, 1, 1, 3, 2)
    weights = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64).reshape(1, 1, 1, 3)
    out = ms_deform_attn_v2_core(value, shapes, locs, weights, [2, 1])
    assert out.item() == pytest.approx(0.2 * 1 + 0.3 * 4 + 0.5 * 10, abs=1e-12)
