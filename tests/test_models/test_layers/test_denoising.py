"""``build_denoising_queries`` (contrastive denoising, CDN) against the
official algorithm (docs: ``rtdetrv2.md`` "Denoising (contrastive DN)"):

- groups = max(1, num_denoising // max_gt); each group = max_gt positives
  (the image's GTs, padded to max_gt) followed by max_gt negatives;
- label noise: each real GT query's label is replaced by a class drawn
  uniformly from [0, num_classes) with probability label_noise_ratio * 0.5
  (0.25 at the official 0.5). The drawn class may equal the old one, so the
  fraction of labels that *change* is ratio * 0.5 * (C - 1) / C;
- box noise on the xyxy corners: corner += sign * m * (wh / 2) * scale,
  sign = +-1 with probability 1/2, m ~ U[0, 1) for positives and U[1, 2)
  for negatives; clipped to [0, 1]; boxes returned as logits of cxcywh
  (mmdet's/official inverse_sigmoid, eps 1e-5);
- attention mask (True = blocked): matching queries cannot see denoising
  queries; denoising groups cannot see each other (they do see the
  matching queries).

Expected layouts and masks below are written out by hand; the statistics
are compared with those formulas with tolerances of 5 binomial standard
deviations (or scipy's tests at p > 1e-4). Noise is drawn from torch's
global generator, seeded in each test.
"""
import math

import pytest
import torch
import torch.nn as nn
from scipy import stats

from rtdetr_mm.models.layers.denoising import build_denoising_queries

LOGIT_0 = math.log(1e-5)  # inverse_sigmoid(0) with eps 1e-5 (padding boxes)


def _label_embed(num_classes):
    """(C + 1, 1) embedding whose row k is k: the content is the label."""
    embed = nn.Embedding(num_classes + 1, 1, padding_idx=num_classes)
    with torch.no_grad():
        embed.weight.copy_(torch.arange(num_classes + 1, dtype=torch.float32)[:, None])
    return embed


def _labels(content):
    return content[..., 0].round().long()


def _cxcywh(*boxes):
    return torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)


def _build(labels, boxes, num_classes=5, num_queries=3, **kwargs):
    return build_denoising_queries(labels, boxes, num_classes, num_queries,
                                   _label_embed(num_classes), **kwargs)


# ------------------------------------------------------- layout and meta
def test_group_layout_without_noise():
    """2 images with 2 and 1 GTs, budget 5: max_gt 2, 5 // 2 = 2 groups of
    2 positives + 2 negatives, 8 denoising queries."""
    labels = [torch.tensor([3, 1]), torch.tensor([4])]
    b0 = _cxcywh((0.3, 0.4, 0.2, 0.1), (0.6, 0.5, 0.3, 0.4))
    b1 = _cxcywh((0.5, 0.5, 0.5, 0.5))
    content, logits, mask, meta = _build(labels, [b0, b1], num_denoising=5,
                                         label_noise_ratio=0.0, box_noise_scale=0.0)
    assert content.shape == (2, 8, 1) and logits.shape == (2, 8, 4)
    assert mask.shape == (11, 11) and mask.dtype == torch.bool
    P = 5  # padding label = num_classes
    assert _labels(content).tolist() == [[3, 1, 3, 1, 3, 1, 3, 1],
                                         [4, P, 4, P, 4, P, 4, P]]
    pad = [0.0] * 4
    expected_boxes = torch.tensor([
        [b0[0].tolist(), b0[1].tolist()] * 4,
        [b1[0].tolist(), pad] * 4])
    torch.testing.assert_close(logits.sigmoid(), expected_boxes, rtol=0, atol=2e-5)
    assert torch.allclose(logits[1, 1::2], torch.full((4, 4), LOGIT_0), atol=1e-4)
    # meta: positives of image 0 at 0, 1 (group 0) and 4, 5 (group 1);
    # image 1's padding slots (1, 3, 5, 7) are never positives
    assert meta.num_groups == 2 and meta.num_dn_queries == 8
    assert [idx.tolist() for idx in meta.positive_idx] == [[0, 1, 4, 5], [0, 4]]
    # the same pairs for each of 2 decoder layers; GT indices count in the GTs
    # of both images concatenated (image 1's GT 0 is GT 2)
    pairs = meta.matched_pairs([2, 1], 2, torch.device('cpu'))
    assert pairs.counts == [6, 6]
    assert list(zip(*(t.tolist() for t in pairs[:4]))) == [
        (s, b, q, g) for s in range(2)
        for b, q, g in [(0, 0, 0), (0, 1, 1), (0, 4, 0), (0, 5, 1), (1, 0, 2), (1, 4, 2)]]
    # each (query, GT) pair holds that GT's label and box
    all_labels, all_boxes = torch.cat(labels), torch.cat([b0, b1[:1]])
    for b, q, g in zip(pairs.batch.tolist(), pairs.query.tolist(), pairs.gt.tolist()):
        assert _labels(content)[b, q].item() == all_labels[g].item()
        torch.testing.assert_close(logits[b, q].sigmoid(), all_boxes[g], rtol=0, atol=2e-5)


@pytest.mark.parametrize('num_gts,budget,groups,max_gt', [
    ([3, 1], 100, 33, 3),    # 100 // 3
    ([4, 2], 100, 25, 4),
    ([1], 100, 100, 1),
    ([7, 0], 5, 1, 7),       # 5 // 7 = 0 -> 1
    ([6], 6, 1, 6),
    ([0, 0], 100, 1, 1),     # no GT at all: one group of 2 padding queries
])
def test_number_of_groups_follows_the_largest_gt_count(num_gts, budget, groups, max_gt):
    gen = torch.Generator().manual_seed(0)
    labels = [torch.randint(0, 5, (n,), generator=gen) for n in num_gts]
    boxes = [torch.rand(n, 4, generator=gen) * 0.3 + 0.2 for n in num_gts]
    content, logits, mask, meta = _build(labels, boxes, num_queries=4, num_denoising=budget)
    num_dn = 2 * max_gt * groups
    assert meta.num_groups == groups and meta.num_dn_queries == num_dn
    assert content.shape[:2] == logits.shape[:2] == (len(num_gts), num_dn)
    assert mask.shape == (num_dn + 4, num_dn + 4)
    assert [len(idx) for idx in meta.positive_idx] == [n * groups for n in num_gts]


def test_batch_without_gt_gives_padding_queries():
    content, logits, mask, meta = _build([torch.zeros(0, dtype=torch.long)] * 2,
                                         [torch.zeros(0, 4)] * 2, num_queries=2)
    assert _labels(content).tolist() == [[5, 5], [5, 5]]  # padding label, even with noise on
    torch.testing.assert_close(logits, torch.full((2, 2, 4), LOGIT_0), rtol=0, atol=1e-4)
    assert [idx.numel() for idx in meta.positive_idx] == [0, 0]
    # 2 denoising queries (one group) + 2 matching queries
    assert mask.tolist() == [[False, False, False, False],
                             [False, False, False, False],
                             [True, True, False, False],
                             [True, True, False, False]]


def test_no_budget_no_queries():
    labels, boxes = [torch.tensor([1])], [_cxcywh((0.5, 0.5, 0.2, 0.2))]
    assert _build(labels, boxes, num_denoising=0) == (None, None, None, None)


# --------------------------------------------------------- attention mask
def test_attention_mask_by_hand():
    """max_gt 2 (group size 4), 2 groups, 3 matching queries: 11 x 11.
    x = blocked."""
    labels = [torch.tensor([0, 1]), torch.tensor([2])]
    boxes = [_cxcywh((0.5, 0.5, 0.2, 0.2), (0.4, 0.4, 0.2, 0.2)), _cxcywh((0.5, 0.5, 0.1, 0.1))]
    _, _, mask, _ = _build(labels, boxes, num_queries=3, num_denoising=5)
    rows = [
        '....xxxx...',  # group 0 sees itself and the matching queries
        '....xxxx...',
        '....xxxx...',
        '....xxxx...',
        'xxxx.......',  # group 1
        'xxxx.......',
        'xxxx.......',
        'xxxx.......',
        'xxxxxxxx...',  # matching queries see only each other
        'xxxxxxxx...',
        'xxxxxxxx...',
    ]
    assert [''.join('x' if v else '.' for v in row) for row in mask.tolist()] == rows


def test_attention_mask_three_groups_rule():
    """3 GTs, budget 10: 3 groups of 6, 5 matching queries; entry by entry
    against the rule."""
    labels = [torch.tensor([0, 1, 2])]
    boxes = [torch.full((3, 4), 0.3)]
    _, _, mask, meta = _build(labels, boxes, num_queries=5, num_denoising=10)
    assert meta.num_groups == 3 and meta.num_dn_queries == 18
    for i in range(23):
        for j in range(23):
            if i >= 18:
                blocked = j < 18
            else:
                blocked = j < 18 and i // 6 != j // 6
            assert bool(mask[i, j]) == blocked, (i, j)


# ------------------------------------------------------ label noise stats
def _many_gts(gen, num_gts, num_classes):
    labels = [torch.randint(0, num_classes, (n,), generator=gen) for n in num_gts]
    boxes = [torch.rand(n, 2, generator=gen) * 0.4 + 0.3 for n in num_gts]
    boxes = [torch.cat([b, torch.full_like(b, 0.1)], -1) for b in boxes]
    return labels, boxes


@pytest.mark.parametrize('ratio', [0.5, 0.2, 1.0])
def test_label_noise_rate_and_uniform_replacement(ratio):
    num_classes = 4
    torch.manual_seed(1)
    gen = torch.Generator().manual_seed(2)
    num_gts = [40] * 6 + [10, 0]
    labels, boxes = _many_gts(gen, num_gts, num_classes)
    original, noisy, is_negative = [], [], []
    for _ in range(10):
        content, _, _, meta = _build(labels, boxes, num_classes=num_classes, num_queries=1,
                                     num_denoising=800, label_noise_ratio=ratio,
                                     box_noise_scale=0.0)
        got = _labels(content)
        groups, max_gt = meta.num_groups, max(num_gts)
        for img, n in enumerate(num_gts):
            slots = torch.arange(2 * max_gt * groups).reshape(groups, 2, max_gt)
            real = slots[:, :, :n].reshape(-1)
            padding = slots[:, :, n:].reshape(-1)
            original.append(labels[img].repeat(2 * groups))
            noisy.append(got[img, real])
            is_negative.append(torch.tensor([False] * n + [True] * n, dtype=torch.bool).repeat(groups))
            assert (got[img, padding] == num_classes).all()  # padding never noised
    original, noisy, is_negative = torch.cat(original), torch.cat(noisy), torch.cat(is_negative)
    N = original.numel()
    assert N == 10 * 250 * 2 * 20  # 250 real GTs, 20 groups, positives + negatives
    assert ((noisy >= 0) & (noisy < num_classes)).all()  # never the padding label
    changed = noisy != original
    p = ratio * 0.5 * (num_classes - 1) / num_classes
    tol = 5 * math.sqrt(p * (1 - p) / N)
    assert abs(changed.float().mean().item() - p) < tol, (changed.float().mean().item(), p, tol)
    # positives and negatives are noised alike (and independently of each other)
    for part in (is_negative, ~is_negative):
        n = int(part.sum())
        assert abs(changed[part].float().mean().item() - p) < 5 * math.sqrt(p * (1 - p) / n)
    # the new label is uniform over the other classes: for every original
    # class, a chi-square test of the C - 1 replacement counts
    for c in range(num_classes):
        sel = changed & (original == c)
        counts = torch.bincount(noisy[sel], minlength=num_classes)
        others = [int(counts[k]) for k in range(num_classes) if k != c]
        assert counts[c] == 0 and sum(others) > 500
        assert stats.chisquare(others).pvalue > 1e-4, (c, others)


def test_no_label_noise_at_ratio_zero():
    torch.manual_seed(3)
    gen = torch.Generator().manual_seed(3)
    labels, boxes = _many_gts(gen, [30, 20], 4)
    content, _, _, meta = _build(labels, boxes, num_classes=4, num_denoising=300,
                                 label_noise_ratio=0.0)
    got = _labels(content)
    for img, n in enumerate([30, 20]):
        slots = torch.arange(60 * meta.num_groups).reshape(meta.num_groups, 2, 30)
        assert (got[img, slots[:, :, :n].reshape(-1)] == labels[img].repeat(
            2 * meta.num_groups)).all()


# -------------------------------------------------------- box noise stats
def _corners(cxcywh):
    cx, cy, w, h = cxcywh.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)


def _noised(scale, seed=4, rounds=6):
    """GT boxes far enough from the border that nothing is clipped; per
    noised query: its GT (cxcywh) and the returned box (cxcywh, float64),
    positives and negatives apart."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    num_gts = [20, 12, 5]
    labels = [torch.randint(0, 3, (n,), generator=gen) for n in num_gts]
    boxes = []
    for n in num_gts:
        wh = torch.rand(n, 2, generator=gen) * 0.15 + 0.05   # <= 0.2
        cxcy = torch.rand(n, 2, generator=gen) * 0.2 + 0.4   # in [0.4, 0.6]
        boxes.append(torch.cat([cxcy, wh], -1))              # corners +- 2 half-sizes inside
    out = {0: ([], []), 1: ([], [])}
    for _ in range(rounds):
        _, logits, _, meta = _build(labels, boxes, num_classes=3, num_denoising=200,
                                    label_noise_ratio=0.0, box_noise_scale=scale)
        noisy = logits.double().sigmoid()
        groups, max_gt = meta.num_groups, max(num_gts)
        for img, n in enumerate(num_gts):
            slots = torch.arange(2 * max_gt * groups).reshape(groups, 2, max_gt)
            for kind in (0, 1):
                q = slots[:, kind, :n].reshape(-1)  # group-major, GT 0..n-1
                out[kind][0].append(boxes[img].double().repeat(groups, 1))
                out[kind][1].append(noisy[img, q])
    return {kind: (torch.cat(gt), torch.cat(got)) for kind, (gt, got) in out.items()}


def _displacement(gt, got, scale):
    """Corner displacements in units of half size * scale."""
    half = torch.cat([gt[:, 2:], gt[:, 2:]], -1) / 2 * scale
    return (_corners(got) - _corners(gt)) / half


def _check_noise(d, low, n_expected):
    """|d| uniform on [low, low + 1) (Kolmogorov-Smirnov), signs fair."""
    d = d.reshape(-1)
    N = d.numel()
    assert N == n_expected
    eps = 1e-3  # float32 logits of boxes ~0.5 +- 0.2, over half sizes >= 0.025
    assert ((d.abs() > low - eps) & (d.abs() < low + 1 + eps)).all(), (d.abs().min(),
                                                                       d.abs().max())
    assert stats.kstest((d.abs() - low).numpy(), 'uniform').pvalue > 1e-4
    frac = (d > 0).double().mean().item()
    assert abs(frac - 0.5) < 5 * math.sqrt(0.25 / N), frac
    assert abs(d.abs().mean().item() - (low + 0.5)) < 5 * math.sqrt(1 / 12 / N)


ROUNDS_X_QUERIES = 6 * 37 * 10  # rounds x GTs x groups


def test_box_noise_scale_half():
    """scale 0.5: positives move each corner by m * 0.5 half-sizes, m in
    [0, 1); negatives by m in [1, 2): corners never cross."""
    noised = _noised(0.5)
    _check_noise(_displacement(*noised[0], 0.5), 0.0, 4 * ROUNDS_X_QUERIES)
    _check_noise(_displacement(*noised[1], 0.5), 1.0, 4 * ROUNDS_X_QUERIES)


def test_box_noise_scale_one_and_crossed_negative_corners():
    """scale 1 (official): positives as above. A negative whose left corner
    moves right and right corner moves left (probability 1/4 per axis)
    moves each by more than a half-size, so x2 < x1: the official code keeps
    such a box, its width goes through inverse_sigmoid clamped to 0. The
    other negatives move each corner by [1, 2) half-sizes."""
    noised = _noised(1.0)
    _check_noise(_displacement(*noised[0], 1.0), 0.0, 4 * ROUNDS_X_QUERIES)
    gt, got = noised[1]
    N = gt.shape[0]
    crossed = got[:, 2:] < 1e-4  # (N, 2): width, height clamped to ~0
    for axis in (0, 1):
        frac = crossed[:, axis].double().mean().item()
        assert abs(frac - 0.25) < 5 * math.sqrt(0.25 * 0.75 / N), (axis, frac)
    both = (crossed[:, 0] & crossed[:, 1]).double().mean().item()
    assert abs(both - 1 / 16) < 5 * math.sqrt(1 / 16 * 15 / 16 / N), both
    # not crossed on either axis: every corner moved by [1, 2) half-sizes
    ok = ~crossed.any(-1)
    d = _displacement(gt[ok], got[ok], 1.0)
    assert ((d.abs() > 1 - 1e-3) & (d.abs() < 2 + 1e-3)).all()
    assert stats.kstest((d.abs() - 1).reshape(-1).numpy(), 'uniform').pvalue > 1e-4
    # positives move less than negatives
    assert _displacement(*noised[0], 1.0).abs().mean() < 0.6 < 1.4 < d.abs().mean()


def test_box_noise_is_clipped_to_the_image():
    """A GT touching the left border (x1 = 0) and one touching the bottom
    (y2 = 1): every noised corner stays in [0, 1], and the border corner
    that moves outwards (probability 1/2) is clipped onto the border."""
    torch.manual_seed(5)
    labels = [torch.tensor([0, 1])]
    boxes = [_cxcywh((0.1, 0.5, 0.2, 0.2), (0.5, 0.85, 0.2, 0.3))]
    _, logits, _, meta = _build(labels, boxes, num_classes=2, num_denoising=2000,
                                label_noise_ratio=0.0)
    corners = _corners(logits.double().sigmoid())[0]  # (Ndn, 4)
    assert (corners > -1e-4).all() and (corners < 1 + 1e-4).all()
    slots = torch.arange(4 * meta.num_groups).reshape(meta.num_groups, 2, 2)
    n = meta.num_groups * 2  # positives and negatives
    x1_first = corners[slots[:, :, 0].reshape(-1), 0]
    y2_second = corners[slots[:, :, 1].reshape(-1), 3]
    for values, border in ((x1_first, 0.0), (y2_second, 1.0)):
        on_border = ((values - border).abs() < 1e-4).double().mean().item()
        assert abs(on_border - 0.5) < 5 * math.sqrt(0.25 / n), on_border


def test_no_box_noise_at_scale_zero():
    torch.manual_seed(6)
    boxes = [_cxcywh((0.3, 0.3, 0.2, 0.1), (0.7, 0.6, 0.1, 0.3))]
    _, logits, _, meta = _build([torch.tensor([0, 1])], boxes, num_denoising=10,
                                box_noise_scale=0.0)
    torch.testing.assert_close(logits[0].sigmoid(), boxes[0].repeat(2 * meta.num_groups, 1),
                               rtol=0, atol=2e-5)


def test_dn_cfg_defaults_are_the_official_ones():
    """The head's ``dn_cfg``: left-out keys take the official values
    (num_denoising 100, label_noise_ratio 0.5, box_noise_scale 1.0); None
    disables denoising; a misspelt key is an error."""
    from rtdetr_mm.models.layers.denoising import resolve_dn_cfg
    official = dict(num_denoising=100, label_noise_ratio=0.5, box_noise_scale=1.0)
    assert resolve_dn_cfg({}) == official
    assert resolve_dn_cfg(dict(num_denoising=10)) == dict(official, num_denoising=10)
    assert resolve_dn_cfg(None)['num_denoising'] == 0
    with pytest.raises(ValueError, match='label_noise'):
        resolve_dn_cfg(dict(label_noise=0.1))
