# DEMO ONLY: a CPU-sized RT-DETRv2-S trained from scratch (nothing pretrained
# can be downloaded) on the generated shapes dataset (data/shapes, made by
# `python tools/demo.py`). Reduced from rtdetrv2_r18vd: 128-channel encoder and
# decoder, 2 decoder layers, 100 queries, 192x192 input; warm-up and EMA
# scaled to a ~500-iteration run. Do not use for real data.
_base_ = '../rtdetrv2/rtdetrv2_r18vd_4xb4-120e_coco.py'

data_root = 'data/shapes/'
classes = ('square', 'disk', 'triangle', 'ring')
image_size = (192, 192)

model = dict(
    neck=dict(hidden_dim=128, dim_feedforward=512, nhead=4),
    bbox_head=dict(num_classes=len(classes), in_channels=(128, 128, 128), hidden_dim=128,
                   num_heads=4, dim_feedforward=512, num_layers=2, num_queries=100,
                   num_denoising=50))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='Resize', scale=image_size, keep_ratio=False),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_size, keep_ratio=False),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=8, num_workers=2, persistent_workers=True,
    dataset=dict(data_root=data_root, ann_file='annotations/instances_train.json',
                 data_prefix=dict(img='images/train/'), metainfo=dict(classes=classes),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8, num_workers=2, persistent_workers=True,
    dataset=dict(data_root=data_root, ann_file='annotations/instances_val.json',
                 data_prefix=dict(img='images/val/'), metainfo=dict(classes=classes),
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

max_epochs = 24
train_cfg = dict(max_epochs=max_epochs, val_interval=4)
# From scratch on a tiny set: a higher lr and a looser clip than the recipe.
optim_wrapper = dict(optimizer=dict(lr=4e-4), clip_grad=dict(max_norm=1.0))
param_scheduler = [dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=60)]
default_hooks = dict(logger=dict(interval=10),
                     checkpoint=dict(interval=4, max_keep_ckpts=1))
custom_hooks = [
    dict(type='EMAHook', ema_type='ExpMomentumEMA', momentum=2e-3, gamma=100,
         update_buffers=True, priority=49),
]
