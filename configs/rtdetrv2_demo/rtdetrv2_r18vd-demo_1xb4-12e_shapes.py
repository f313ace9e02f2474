# DEMO ONLY: a CPU-sized RT-DETRv2-S trained from scratch (nothing pretrained
# can be downloaded here) on the bundled synthetic shapes data
# (configs/_base_/datasets/shapes_detection.py; `make demo` generates it).
# Same data, input size (256 x 256), pipeline, evaluator and schedule length
# as the comparison configs in configs/comparison/. Do not use for real data:
# start from configs/rtdetrv2_finetune/ instead.
#
# Reduced from rtdetrv2_r18vd (what changes and why):
# - encoder and decoder width 128 (256), FFN 512 (1024), 4 heads (8), 2 decoder
#   layers (3): ~4x fewer encoder/decoder FLOPs, the backbone is unchanged;
# - 100 queries (300) and a denoising budget of 50 (100): at most 8 objects
#   per image here;
# - lr 4e-4 (1e-4) and gradient clip 1.0 (0.1): from scratch, 1200 steps of
#   4 images (12 epochs of the 400 training images);
# - warm-up 5% of the run (60 steps) instead of 2000, and an EMA of about
#   200 steps (momentum 5e-3, official 1e-4 = 10000 steps), warmed up over the
#   same 60 steps: both scaled to the short run;
# - light augmentation (flip only, fixed-size resize), no multi-scale.
_base_ = '../rtdetrv2/rtdetrv2_r18vd_4xb4-120e_coco.py'

import mmengine  # noqa: E402  (a module: mmengine drops it from the config)

# ---------------------------------------------------------------------------
# Data, input size, pipeline, evaluator, schedule length: the shared file.
# mmengine refuses two `_base_` files that define the same keys (the r18
# config carries the COCO data keys), so the file is read here and each data
# key replaces the COCO one as a whole (`_delete_=True`). Names starting with
# `__` are not kept in the config.
# ---------------------------------------------------------------------------
__shapes = mmengine.Config.fromfile(
    '{{ fileDirname }}/../_base_/datasets/shapes_detection.py')
dataset_type = __shapes.dataset_type
data_root = __shapes.data_root
classes = __shapes.classes
image_size = __shapes.image_size  # IMAGE_SIZE (h, w): the runner writes it into every Resize
train_pipeline = __shapes.train_pipeline
test_pipeline = __shapes.test_pipeline
train_dataloader = dict(__shapes.train_dataloader, _delete_=True)
val_dataloader = dict(__shapes.val_dataloader, _delete_=True)
test_dataloader = dict(__shapes.test_dataloader, _delete_=True)
val_evaluator = dict(__shapes.val_evaluator, _delete_=True)
test_evaluator = dict(__shapes.test_evaluator, _delete_=True)
max_epochs = __shapes.max_epochs
# EVAL_RATE_EPOCHS = 1: COCO mAP (and per-class AP) after every epoch.
train_cfg = dict(max_epochs=max_epochs, val_interval=1)

model = dict(
    neck=dict(hidden_dim=128, dim_feedforward=512, num_heads=4),
    bbox_head=dict(num_classes=__shapes.num_classes, in_channels=(128, 128, 128),
                   hidden_dim=128, num_heads=4, dim_feedforward=512, num_layers=2,
                   num_queries=100, dn_cfg=dict(num_denoising=50)),
    test_cfg=dict(max_per_img=100))

optim_wrapper = dict(optimizer=dict(lr=4e-4), clip_grad=dict(max_norm=1.0))
# WARMUP_RATIO: 5% of the 1200 optimizer steps, computed when training starts.
param_scheduler = [dict(_base_.param_scheduler[0], warmup_ratio=0.05)]

default_hooks = dict(
    logger=dict(interval=10),                       # progress every 10 iterations
    checkpoint=dict(interval=1, max_keep_ckpts=1),  # the newest + the best (EMA)
    ema=dict(momentum=5e-3),
    aug_switch=None)  # no strong augmentation here: nothing to switch
randomness = dict(seed=0)
