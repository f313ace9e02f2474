"""Discrete sampling of ms_deform_attn_v2_core on maps with W != H.

Every pixel of the value maps encodes where it is (level, y, x) and whose it
is (batch * heads + head), so the output tells which pixel was read. The
expected pixel is computed here point by point: the nearest integer to
loc * size (ties up: int(loc * size + 0.5), the official code's and
transformers' rule), then x is clamped to [0, W - 1] and y to [0, H - 1].
The official code clamps x to H - 1 too; many points below have
x > H - 1, where that would read another pixel.
"""
import math

import torch

from rtdetr_mm.models.layers.ms_deform_attn_v2 import ms_deform_attn_v2_core

# (H, W) per level: wide, tall, wide again, so both clamps meet a short axis.
SHAPES = [(3, 7), (7, 3), (2, 5)]
POINTS = [3, 2, 2]


def _encoded_value(bs, num_heads, shapes=SHAPES):
    """(B, sum(HW), heads, 4) with channels (level, y, x, b * heads + head)."""
    rows = []
    for level, (h, w) in enumerate(shapes):
        y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing='ij')
        rows.append(torch.stack([torch.full_like(y, level), y, x], -1).reshape(h * w, 3))
    pos = torch.cat(rows).float()  # (sum(HW), 3)
    owner = torch.arange(bs * num_heads, dtype=torch.float32).reshape(bs, 1, num_heads, 1)
    pos = pos[None, :, None, :].expand(bs, -1, num_heads, -1)
    return torch.cat([pos, owner.expand(-1, pos.shape[1], -1, -1)], -1)


def _edge_locations(gen, size, n):
    """n normalised coordinates (k + d) / size, k in [-2, size + 2], |d| <= 0.4:
    no rounding ties, many beyond the last pixel and before the first."""
    k = torch.randint(-2, size + 3, (n,), generator=gen).double()
    d = torch.rand(n, generator=gen).double() * 0.8 - 0.4
    return ((k + d) / size).float()


def _expected_pixel(loc_x, loc_y, h, w):
    """Independent per-point rule: nearest integer (ties up), clamp per axis."""
    ix = math.floor(float(loc_x) * w + 0.5)
    iy = math.floor(float(loc_y) * h + 0.5)
    return min(max(iy, 0), h - 1), min(max(ix, 0), w - 1)


def test_discrete_reads_clamped_pixel_per_point():
    """One-hot attention weights: every query reads exactly one point, so the
    output is that point's pixel; compare all of them with the rule."""
    bs, num_heads, num_queries = 2, 2, 140
    total = sum(POINTS)
    gen = torch.Generator().manual_seed(0)
    locs = torch.empty(bs, num_queries, num_heads, total, 2)
    starts = [sum(POINTS[:i]) for i in range(len(POINTS))]
    for (h, w), start, n in zip(SHAPES, starts, POINTS):
        count = bs * num_queries * num_heads * n
        locs[..., start:start + n, 0] = _edge_locations(gen, w, count).reshape(
            bs, num_queries, num_heads, n)
        locs[..., start:start + n, 1] = _edge_locations(gen, h, count).reshape(
            bs, num_queries, num_heads, n)
    # Query q of (b, head) reads point (q + head) % total only.
    which = (torch.arange(num_queries)[:, None] + torch.arange(num_heads)[None]) % total
    weights = torch.nn.functional.one_hot(which, total).float()[None].expand(bs, -1, -1, -1)
    value = _encoded_value(bs, num_heads)

    out = ms_deform_attn_v2_core(value, SHAPES, locs, weights.contiguous(), POINTS,
                                 method='discrete')
    out = out.reshape(bs, num_queries, num_heads, 4)

    level_of = [lvl for lvl, n in enumerate(POINTS) for _ in range(n)]
    checked_x_beyond_h = 0
    for b in range(bs):
        for q in range(num_queries):
            for m in range(num_heads):
                p = int(which[q, m])
                level = level_of[p]
                h, w = SHAPES[level]
                loc_x, loc_y = locs[b, q, m, p].tolist()
                iy, ix = _expected_pixel(loc_x, loc_y, h, w)
                expected = [level, iy, ix, b * num_heads + m]
                got = out[b, q, m].tolist()
                assert got == expected, (
                    f'b={b} q={q} head={m} point={p} level={level} (H={h}, W={w}) '
                    f'loc=({loc_x:.4f}, {loc_y:.4f}): read (level, y, x, owner) '
                    f'{got}, expected {expected}')
                checked_x_beyond_h += ix > h - 1
    # Enough points where clamping x to H - 1 (the official code) reads
    # another pixel.
    assert checked_x_beyond_h > 50, checked_x_beyond_h


def test_discrete_edges_literal():
    """Hand-picked points on a 3 x 7 map, expected pixels written out."""
    h, w = 3, 7
    cases = [  # (loc_x, loc_y) -> (y, x)
        ((0.95, 0.40), (1, 6)),   # x 6.65 -> 7 -> clamped to W - 1 = 6 (H - 1 would give 2)
        ((1.30, 1.30), (2, 6)),   # beyond the bottom-right corner
        ((0.60, 0.90), (2, 4)),   # x 4.2 -> 4 > H - 1, y 2.7 -> 3 -> 2
        ((0.50, 0.20), (1, 4)),   # x 3.5 -> 4 (ties up), y 0.6 -> 1
        ((0.44, 0.10), (0, 3)),   # x 3.08 -> 3 = H: the first column H - 1 clamping loses
        ((0.30, 0.60), (2, 2)),   # x 2.1 -> 2, y 1.8 -> 2: inside both bounds
        ((-0.20, -0.30), (0, 0)),  # before the top-left corner
        ((0.05, 0.16), (0, 0)),   # x 0.35 -> 0, y 0.48 -> 0
    ]
    locs = torch.tensor([c[0] for c in cases]).reshape(1, len(cases), 1, 1, 2)
    weights = torch.ones(1, len(cases), 1, 1)
    value = _encoded_value(1, 1, [(h, w)])
    out = ms_deform_attn_v2_core(value, [(h, w)], locs, weights, [1], method='discrete')
    got = [tuple(int(v) for v in row[1:3]) for row in out[0]]
    assert got == [c[1] for c in cases], list(zip([c[0] for c in cases], got))


def test_discrete_weighted_sum_random_values():
    """Random values and weights: the output is the weighted sum of the
    gathered rows, with the per-point rule, for every batch and head."""
    bs, num_heads, head_dim, num_queries = 2, 2, 5, 9
    total = sum(POINTS)
    gen = torch.Generator().manual_seed(1)
    num_tokens = sum(h * w for h, w in SHAPES)
    value = torch.randn(bs, num_tokens, num_heads, head_dim, generator=gen)
    locs = torch.rand(bs, num_queries, num_heads, total, 2, generator=gen) * 1.4 - 0.2
    weights = torch.rand(bs, num_queries, num_heads, total, generator=gen)
    out = ms_deform_attn_v2_core(value, SHAPES, locs, weights, POINTS, method='discrete')

    expected = torch.zeros(bs, num_queries, num_heads, head_dim)
    level_of = [lvl for lvl, n in enumerate(POINTS) for _ in range(n)]
    offsets = [sum(h * w for h, w in SHAPES[:i]) for i in range(len(SHAPES))]
    for b in range(bs):
        for q in range(num_queries):
            for m in range(num_heads):
                for p in range(total):
                    level = level_of[p]
                    h, w = SHAPES[level]
                    loc_x, loc_y = locs[b, q, m, p].tolist()
                    iy, ix = _expected_pixel(loc_x, loc_y, h, w)
                    row = value[b, offsets[level] + iy * w + ix, m]
                    expected[b, q, m] += weights[b, q, m, p] * row
    torch.testing.assert_close(out, expected.reshape(bs, num_queries, -1),
                               rtol=1e-5, atol=1e-5)
