"""A tiny COCO-format dataset made on the fly for tests."""
import json
import os
import os.path as osp
import pathlib

import cv2
import numpy as np

CLASSES = ('square', 'disk')


def make_tiny_coco(root: str, num_images: int = 16, size=(128, 128), seed: int = 0,
                   empty_every: int = 0) -> dict:
    """Write images with 1-3 coloured squares/disks and a COCO json.

    Args:
        root (str): Output folder (images in ``root/images``).
        num_images (int): Images written.
        size (tuple[int, int]): (h, w) of every image.
        seed (int): RNG seed.
        empty_every (int): Every n-th image has no object (0 = never).

    Returns:
        dict: ``data_root``, ``ann_file`` (absolute), ``img_dir``.
    """
    rng = np.random.default_rng(seed)
    img_dir = osp.join(root, 'images')
    os.makedirs(img_dir, exist_ok=True)
    h, w = size
    images, annotations = [], []
    for i in range(num_images):
        img = (rng.random((h, w, 3)) * 60).astype(np.uint8)
        n = 0 if empty_every and i % empty_every == 0 else int(rng.integers(1, 4))
        for _ in range(n):
            cls = int(rng.integers(0, 2))
            s = int(rng.integers(16, 48))
            x, y = int(rng.integers(0, w - s)), int(rng.integers(0, h - s))
            if cls == 0:
                cv2.rectangle(img, (x, y), (x + s - 1, y + s - 1), (40, 200, 40), -1)
            else:
                cv2.circle(img, (x + s // 2, y + s // 2), s // 2, (200, 40, 200), -1)
            annotations.append(dict(id=len(annotations) + 1, image_id=i + 1, category_id=cls + 1,
                                    bbox=[x, y, s, s], area=float(s * s), iscrowd=0))
        name = f'{i:04d}.png'
        cv2.imwrite(osp.join(img_dir, name), img)
        images.append(dict(id=i + 1, file_name=name, height=h, width=w))
    ann_file = osp.join(root, 'annotations.json')
    categories = [dict(id=k + 1, name=c) for k, c in enumerate(CLASSES)]
    with open(ann_file, 'w') as f:
        json.dump(dict(images=images, annotations=annotations, categories=categories), f)
    return dict(data_root=root, ann_file=ann_file, img_dir=img_dir)


#: config text of the light train / test pipelines at ``image_size`` (flip
#: and a fixed-size resize), shared by the tests' child configs
PIPELINES = '''train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='Resize', scale=image_size[::-1], keep_ratio=False),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_size[::-1], keep_ratio=False),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
'''


def tiny_config(path: str, base: str, data: dict, size=(128, 128), max_epochs: int = 8,
                batch_size: int = 4, lr: float = 2e-4, small_model: bool = False,
                extra: str = '') -> str:
    """Write a child config of ``base`` that trains on the tiny dataset.

    ``size`` is the ``image_size`` knob (h, w); ``small_model`` shrinks the
    encoder/decoder to 64 channels, 1 decoder layer and 20 queries (for
    runner tests that only count iterations); ``extra`` is appended.
    """
    small = """
model = dict(neck=dict(hidden_dim=64, dim_feedforward=128, num_heads=2),
             bbox_head=dict(num_classes=2, in_channels=(64, 64, 64), hidden_dim=64,
                            num_heads=2, dim_feedforward=128, num_layers=1,
                            num_queries=20, dn_cfg=dict(num_denoising=10)))
""" if small_model else ''
    text = f'''
_base_ = {base!r}
classes = {CLASSES!r}
image_size = {tuple(size)!r}
{PIPELINES}dataset = dict(type='CocoDataset', data_root={data['data_root']!r},
               ann_file={data['ann_file']!r}, data_prefix=dict(img='images/'),
               metainfo=dict(classes=classes), filter_cfg=dict(filter_empty_gt=False))
train_dataloader = dict(_delete_=True, batch_size={batch_size}, num_workers=0,
                        sampler=dict(type='RTDETRv2ResumableSampler', shuffle=True),
                        dataset=dict(dataset, pipeline=train_pipeline))
val_dataloader = dict(_delete_=True, batch_size=4, num_workers=0, drop_last=False,
                      sampler=dict(type='DefaultSampler', shuffle=False),
                      dataset=dict(dataset, pipeline=test_pipeline, test_mode=True))
test_dataloader = val_dataloader
val_evaluator = dict(_delete_=True, type='CocoMetric', ann_file={data['ann_file']!r},
                     metric='bbox', format_only=False)
test_evaluator = val_evaluator
model = dict(bbox_head=dict(num_classes=2))
train_cfg = dict(max_epochs={max_epochs}, val_interval={max_epochs})
optim_wrapper = dict(optimizer=dict(lr={lr}))
param_scheduler = [dict(type='RTDETRv2LinearWarmupLR', warmup_steps=4, by_epoch=True,
                        convert_to_iter_based=True)]
# no EMA, no strong-augmentation switch unless a test adds them
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1, max_keep_ckpts=2),
                     ema=None, aug_switch=None)
custom_hooks = []
{small}
{extra}
'''
    with open(path, 'w') as f:
        f.write(text)
    return path


def register_improving_metric() -> str:
    """Register (once) and return the name of a metric whose ``coco/bbox_mAP``
    is 0.1 x (validations so far in this process): every validation is a new
    best, so best checkpoints are written at each one."""
    from mmdet.registry import METRICS
    from mmengine.evaluator import BaseMetric

    if 'ImprovingMetric' not in METRICS.module_dict:

        @METRICS.register_module()
        class ImprovingMetric(BaseMetric):
            default_prefix = 'coco'
            calls = 0

            def process(self, data_batch, data_samples):
                self.results.append(0)

            def compute_metrics(self, results):
                type(self).calls += 1
                return dict(bbox_mAP=0.1 * type(self).calls)

    return 'ImprovingMetric'


# -- hand-written COCO files (one image / annotation entry at a time) ------
def coco_image(i, w=100, h=100):
    """A json image entry ``{i:03d}.png`` of w x h pixels."""
    return dict(id=i, file_name=f'{i:03d}.png', width=w, height=h)


def coco_ann(i, img, cat, bbox):
    """A json annotation (bbox xywh pixels, area 1.0, not crowd)."""
    return dict(id=i, image_id=img, category_id=cat, bbox=bbox, area=1.0, iscrowd=0)


def write_coco(root, images, annotations, categories=None, write_images=True, raw=None):
    """Write ``root/ann.json`` (or ``raw`` text) and a black PNG per image of
    the json's size under ``root/img``. Returns (ann_file, img_dir)."""
    root = pathlib.Path(root)
    root.mkdir(parents=True, exist_ok=True)
    img_dir = root / 'img'
    img_dir.mkdir(exist_ok=True)
    categories = categories or [dict(id=1, name='square'), dict(id=2, name='disk')]
    ann_file = root / 'ann.json'
    ann_file.write_text(raw if raw is not None else json.dumps(
        dict(images=images, annotations=annotations, categories=categories)))
    if write_images:
        for img in images:
            cv2.imwrite(str(img_dir / img['file_name']),
                        np.zeros((img['height'], img['width'], 3), np.uint8))
    return str(ann_file), str(img_dir) + '/'


def good_coco(root, **kw):
    """3 images (the third without objects), 3 valid boxes of 2 classes; see :func:`write_coco`."""
    images = [coco_image(1), coco_image(2), coco_image(3)]
    anns = [coco_ann(1, 1, 1, [10, 10, 30, 30]), coco_ann(2, 1, 2, [50, 50, 20, 20]),
            coco_ann(3, 2, 2, [0, 0, 40, 60])]
    return write_coco(root, images, anns, **kw)
