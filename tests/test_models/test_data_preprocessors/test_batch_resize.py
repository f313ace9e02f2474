"""RTDETRv2BatchResize: official list-based multi-scale batch resize."""
import multiprocessing as mp
import random
import socket
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.structures.bbox import HorizontalBoxes
from mmengine.structures import InstanceData

OFFICIAL_SCALES = [480, 512, 544, 576, 608, 640, 640, 640, 672, 704, 736, 768, 800]


def _samples(box_type=torch.Tensor):
    """Two samples of a (32, 48) batch; the second is padded (30 x 40)."""
    samples = []
    for img_shape, scale_factor, boxes in (
            ((32, 48), (0.5, 0.25), [[0., 0., 48., 32.], [4., 2., 10., 30.]]),
            ((30, 40), (2.0, 3.0), [[1., 1., 39., 29.]])):
        sample = DetDataSample(metainfo=dict(
            img_shape=img_shape, ori_shape=(round(img_shape[0] / scale_factor[1]),
                                            round(img_shape[1] / scale_factor[0])),
            scale_factor=scale_factor, batch_input_shape=(32, 48), pad_shape=(32, 48)))
        bboxes = torch.tensor(boxes)
        sample.gt_instances = InstanceData(
            bboxes=HorizontalBoxes(bboxes) if box_type is HorizontalBoxes else bboxes,
            labels=torch.zeros(len(boxes), dtype=torch.long))
        samples.append(sample)
    return samples


@pytest.mark.parametrize('box_type', [torch.Tensor, HorizontalBoxes])
def test_boxes_and_metas_follow_the_resize(box_type):
    resize = MODELS.build(dict(type='RTDETRv2BatchResize', scales=[(64, 72)]))
    inputs = torch.rand(2, 3, 32, 48)
    samples = _samples(box_type)
    old_boxes = [torch.as_tensor(s.gt_instances.bboxes.tensor if box_type is HorizontalBoxes
                                 else s.gt_instances.bboxes).clone() for s in samples]
    out, samples = resize(inputs, samples)
    assert out.shape == (2, 3, 64, 72)
    torch.testing.assert_close(out, F.interpolate(inputs, size=(64, 72), mode='nearest'))
    sx, sy = 72 / 48, 64 / 32
    for sample, old in zip(samples, old_boxes):
        boxes = sample.gt_instances.bboxes
        assert isinstance(boxes, box_type)
        boxes = boxes.tensor if box_type is HorizontalBoxes else boxes
        torch.testing.assert_close(boxes, old * torch.tensor([sx, sy, sx, sy]))
        assert sample.batch_input_shape == sample.pad_shape == (64, 72)
    assert samples[0].img_shape == (64, 72)
    assert samples[1].img_shape == (60, 60)  # (30, 40) scaled by (2, 1.5)
    assert samples[0].scale_factor == pytest.approx((0.5 * sx, 0.25 * sy))
    assert samples[1].scale_factor == pytest.approx((2.0 * sx, 3.0 * sy))
    # predict()'s rescaling still maps boxes of the resized batch back to the
    # original image: (pixels of the resized batch) / scale_factor.
    for sample, old, orig_sf in zip(samples, old_boxes, [(0.5, 0.25), (2.0, 3.0)]):
        boxes = sample.gt_instances.bboxes
        boxes = boxes.tensor if box_type is HorizontalBoxes else boxes
        torch.testing.assert_close(boxes / torch.tensor(sample.scale_factor).repeat(2),
                                   old / torch.tensor(orig_sf).repeat(2))


def test_disabled_and_same_size_are_identity():
    resize = MODELS.build(dict(type='RTDETRv2BatchResize', scales=[64]))
    inputs, samples = torch.rand(2, 3, 32, 48), _samples()
    resize.enabled = False
    out, out_samples = resize(inputs, samples)
    assert out is inputs and out_samples[0].img_shape == (32, 48)
    assert out_samples[0].gt_instances.bboxes[0].tolist() == [0., 0., 48., 32.]
    resize = MODELS.build(dict(type='RTDETRv2BatchResize', scales=[(32, 48)]))
    out, _ = resize(inputs, _samples())
    assert out is inputs


def test_draws_from_the_list_reproducibly_with_interval():
    resize = MODELS.build(dict(type='RTDETRv2BatchResize', scales=OFFICIAL_SCALES))

    def sizes(n, module):
        out = []
        for _ in range(n):
            x, _ = module(torch.zeros(1, 3, 16, 16), [])
            out.append(x.shape[-1])
        return out

    random.seed(3)
    first = sizes(390, resize)
    random.seed(3)
    assert sizes(390, resize) == first  # python `random`, seeded by the runner
    counts = Counter(first)
    assert set(counts) == set(OFFICIAL_SCALES)
    assert counts[640] > 2 * max(v for k, v in counts.items() if k != 640)  # 3 of 13
    every3 = MODELS.build(dict(type='RTDETRv2BatchResize', scales=OFFICIAL_SCALES, interval=3))
    got = sizes(30, every3)
    assert all(len(set(got[i:i + 3])) == 1 for i in range(0, 30, 3))
    assert len(set(got)) > 1


def test_in_det_data_preprocessor_training_only():
    pre = MODELS.build(dict(
        type='DetDataPreprocessor', mean=[0., 0., 0.], std=[255., 255., 255.], bgr_to_rgb=True,
        pad_size_divisor=32,
        batch_augments=[dict(type='RTDETRv2BatchResize', scales=[(96, 64)])]))
    samples = []
    for _ in range(2):
        s = DetDataSample(metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64),
                                        scale_factor=(1.0, 1.0)))
        s.gt_instances = InstanceData(bboxes=HorizontalBoxes(torch.tensor([[8., 8., 40., 24.]])),
                                      labels=torch.zeros(1, dtype=torch.long))
        samples.append(s)
    data = dict(inputs=[torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)] * 2,
                data_samples=samples)
    out = pre(data, training=True)
    assert out['inputs'].shape == (2, 3, 96, 64)
    assert out['data_samples'][0].batch_input_shape == (96, 64)
    # DetDataPreprocessor turns boxes into tensors before batch augments.
    assert out['data_samples'][0].gt_instances.bboxes.tolist() == [[8., 12., 40., 36.]]
    data['data_samples'] = [DetDataSample(metainfo=dict(img_shape=(64, 64))) for _ in range(2)]
    assert pre(data, training=False)['inputs'].shape == (2, 3, 64, 64)


def _rank_main(rank, port, queue):
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank,
                            world_size=2)
    random.seed(100 + rank)  # different python RNG state on each rank
    resize = MODELS.build(dict(type='RTDETRv2BatchResize', scales=OFFICIAL_SCALES))
    sizes = [resize(torch.zeros(1, 3, 8, 8), [])[0].shape[-1] for _ in range(8)]
    queue.put((rank, sizes))
    dist.destroy_process_group()


def test_ranks_agree_on_the_size():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    ctx = mp.get_context('fork')
    queue = ctx.Queue()
    procs = [ctx.Process(target=_rank_main, args=(r, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert results[0] == results[1]
    random.seed(100)  # rank 0's draws win
    expected = [OFFICIAL_SCALES[random.randrange(13)] for _ in range(8)]
    assert results[0] == expected


OFFICIAL_RATIOS = [0.75, 0.8, 0.85, 0.9, 0.95, 1.0, 1.0, 1.0, 1.05, 1.1, 1.15, 1.2, 1.25]


def test_relative_scales_follow_the_incoming_size():
    """scale_ratios reproduce the official list for a 640 batch and scale
    with any other input size (rounded to multiples of 32)."""
    resize = MODELS.build(dict(type='RTDETRv2BatchResize', scale_ratios=OFFICIAL_RATIOS))
    assert [h for h, _ in resize.candidate_sizes((640, 640))] == OFFICIAL_SCALES
    # 320 x 480 (h, w): each ratio times the side, to the nearest multiple of 32.
    expected = [(max(32, round(r * 320 / 32) * 32), max(32, round(r * 480 / 32) * 32))
                for r in OFFICIAL_RATIOS]
    assert resize.candidate_sizes((320, 480)) == expected
    assert expected[0] == (256, 352) and expected[-1] == (384, 608)
    random.seed(3)
    out, _ = resize(torch.rand(1, 3, 320, 480), _samples()[:1])
    assert tuple(out.shape[-2:]) in set(expected)


def test_scales_and_ratios_are_exclusive():
    with pytest.raises(ValueError, match='exactly one'):
        MODELS.build(dict(type='RTDETRv2BatchResize', scales=[640], scale_ratios=[1.0]))
    with pytest.raises(ValueError, match='exactly one'):
        MODELS.build(dict(type='RTDETRv2BatchResize'))
