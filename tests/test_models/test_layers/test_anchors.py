"""``generate_anchors`` against anchors written out by hand.

The rule (docs/reference: official ``RTDETRTransformerv2._generate_anchors``):
one anchor per cell of every level, centre ``((x + 0.5) / W, (y + 0.5) / H)``,
width = height = ``grid_size * 2**level``, cells in row-major order (y outer,
x inner), levels one after the other. An anchor is valid when all four
coordinates lie strictly inside ``(eps, 1 - eps)``; anchors are returned as
logits ``log(p / (1 - p))``, with ``+inf`` in all four coordinates of an
invalid anchor.

Every expected value below is typed in from that rule (fractions and their
logits: logit(1/2) = 0, logit(1/4) = -ln 3, logit(1/6) = -ln 5, logit(0.05)
= -ln 19, ...), not computed with the code under test.
"""
import math

import pytest
import torch

from rtdetr_mm.models.layers.anchors import generate_anchors

INF = math.inf
LN3, LN5, LN19, LN9 = math.log(3), math.log(5), math.log(19), math.log(9)

# Level 0: H=2, W=3 (non-square, so an x/y swap shows); level 1: H=1, W=2.
SHAPES = [(2, 3), (1, 2)]

# (cx, cy, w, h) as fractions, row-major per level.
BOXES = [
    # level 0, size 0.05
    (1 / 6, 1 / 4, 0.05, 0.05), (1 / 2, 1 / 4, 0.05, 0.05), (5 / 6, 1 / 4, 0.05, 0.05),
    (1 / 6, 3 / 4, 0.05, 0.05), (1 / 2, 3 / 4, 0.05, 0.05), (5 / 6, 3 / 4, 0.05, 0.05),
    # level 1, size 0.05 * 2 = 0.1
    (1 / 4, 1 / 2, 0.1, 0.1), (3 / 4, 1 / 2, 0.1, 0.1),
]
# Their logits, by hand.
LOGITS = [
    (-LN5, -LN3, -LN19, -LN19), (0.0, -LN3, -LN19, -LN19), (LN5, -LN3, -LN19, -LN19),
    (-LN5, LN3, -LN19, -LN19), (0.0, LN3, -LN19, -LN19), (LN5, LN3, -LN19, -LN19),
    (-LN3, 0.0, -LN9, -LN9), (LN3, 0.0, -LN9, -LN9),
]


def test_two_levels_all_valid_default_sizes():
    anchors, valid = generate_anchors(SHAPES)  # grid_size 0.05, eps 0.01
    assert anchors.shape == (1, 8, 4) and anchors.dtype == torch.float32
    assert valid.shape == (1, 8, 1) and valid.dtype == torch.bool
    assert valid.all()
    torch.testing.assert_close(anchors[0], torch.tensor(LOGITS), rtol=0, atol=1e-6)
    # back through the sigmoid: the boxes themselves
    torch.testing.assert_close(anchors[0].sigmoid(), torch.tensor(BOXES), rtol=0, atol=1e-6)


def test_centre_and_size_invalidity_and_the_masked_value():
    """eps = 0.2, grid_size = 0.45: level 0 (size 0.45) loses the columns at
    x = 1/6 (< 0.2) and x = 5/6 (> 0.8); level 1 (size 0.9 > 0.8) is invalid
    everywhere although its centres (1/4, 1/2), (3/4, 1/2) are inside."""
    anchors, valid = generate_anchors(SHAPES, grid_size=0.45, eps=0.2)
    expected_valid = [False, True, False, False, True, False, False, False]
    assert valid[0, :, 0].tolist() == expected_valid
    logit_045 = math.log(0.45 / 0.55)
    expected = torch.full((8, 4), INF)
    expected[1] = torch.tensor([0.0, -LN3, logit_045, logit_045])
    expected[4] = torch.tensor([0.0, LN3, logit_045, logit_045])
    torch.testing.assert_close(anchors[0], expected, rtol=0, atol=1e-6)
    # +inf (not nan, not a large finite number), all four coordinates
    invalid = ~valid[0, :, 0]
    assert torch.isposinf(anchors[0][invalid]).all()
    assert torch.isfinite(anchors[0][~invalid]).all()


def test_bounds_are_strict():
    """A coordinate exactly at eps or at 1 - eps is invalid. Levels (2, 2)
    and (1, 2) put every centre coordinate at 1/4, 1/2 or 3/4 (exact in
    binary); with eps = 1/4 each anchor has a coordinate on a bound, so none
    is valid; a hair smaller eps makes all valid (sizes 0.3, 0.6 inside)."""
    shapes = [(2, 2), (1, 2)]
    _, valid = generate_anchors(shapes, grid_size=0.3, eps=0.25)
    assert valid.shape == (1, 6, 1) and not valid.any()
    _, valid = generate_anchors(shapes, grid_size=0.3, eps=0.25 - 1e-4)
    assert valid.all()


def test_single_cell_levels_and_sizes_double_per_level():
    """Three 1x1 levels: centre (1/2, 1/2) everywhere, sizes 0.1, 0.2, 0.4."""
    anchors, valid = generate_anchors([(1, 1)] * 3, grid_size=0.1)
    assert valid.all()
    sizes = [0.1, 0.2, 0.4]
    expected = torch.tensor([[0.0, 0.0, math.log(s / (1 - s)), math.log(s / (1 - s))]
                             for s in sizes])
    torch.testing.assert_close(anchors[0], expected, rtol=0, atol=1e-6)


def test_dtype_and_device_follow_the_arguments():
    anchors, valid = generate_anchors(SHAPES, dtype=torch.float64, device='cpu')
    assert anchors.dtype == torch.float64 and valid.dtype == torch.bool
    torch.testing.assert_close(anchors[0], torch.tensor(LOGITS, dtype=torch.float64),
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize('shapes', [[(3, 5)], [(4, 2), (2, 1)], [(5, 7), (3, 4), (2, 2)]])
def test_level_offsets_and_row_major_order(shapes):
    """Anchor k of level l sits at sum(H_j W_j, j < l) + y * W_l + x, for
    every cell: a per-cell loop with the rule, in float64."""
    anchors, valid = generate_anchors(shapes, grid_size=0.05, eps=0.01)
    start = 0
    for level, (h, w) in enumerate(shapes):
        size = 0.05 * 2 ** level
        for y in range(h):
            for x in range(w):
                box = [(x + 0.5) / w, (y + 0.5) / h, size, size]
                ok = all(0.01 < v < 0.99 for v in box)
                k = start + y * w + x
                assert bool(valid[0, k, 0]) == ok, (level, y, x)
                want = [math.log(v / (1 - v)) for v in box] if ok else [INF] * 4
                assert anchors[0, k].tolist() == pytest.approx(want, abs=1e-5), (level, y, x)
        start += h * w
    assert anchors.shape[1] == start
