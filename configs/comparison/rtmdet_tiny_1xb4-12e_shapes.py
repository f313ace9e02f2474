# COMPARISON ONLY: mmdet's own RTMDet-tiny (CSPNeXt, anchor-free, NMS),
# trained from scratch on the bundled shapes data with the same input size,
# pipeline, evaluator and number of epochs as the RT-DETRv2 demo
# (configs/_base_/datasets/shapes_detection.py). Not reduced: RTMDet-tiny is
# already CPU-sized. It keeps its own normalisation (ImageNet mean/std in BGR
# order), losses, assigner and NMS. Its Mosaic/MixUp/large-scale-jitter
# pipeline is replaced by the shared light one (as is its stage-2 pipeline).
# SyncBN (from the config) becomes BN in a single process (mmengine's Runner,
# DetInferencer and tools/analysis_tools/compare.py revert it).
_base_ = 'mmdet::rtmdet/rtmdet_tiny_8xb32-300e_coco.py'

import mmengine  # noqa: E402  (a module: mmengine drops it from the config)

# The shared data file loads images with rtdetr_mm's RTDETRv2LoadImageFromFile
# (mmcv's loader, failing with the image path): mmdet's own tools need the
# plugin imported (our tools/ import it anyway).
custom_imports = dict(imports=['rtdetr_mm'], allow_failed_imports=False)

# ---------------------------------------------------------------------------
# Data, input size, pipeline, evaluator, schedule length: the shared file.
# mmengine refuses two `_base_` files that define the same keys (the mmdet
# config has its COCO data keys), so the file is read here and each data key
# replaces the mmdet one as a whole (`_delete_=True`: no key of the COCO
# settings survives). Names starting with `__` are not kept in the config.
# ---------------------------------------------------------------------------
__shapes = mmengine.Config.fromfile(
    '{{ fileDirname }}/../_base_/datasets/shapes_detection.py')
dataset_type = __shapes.dataset_type
data_root = __shapes.data_root
classes = __shapes.classes
image_size = __shapes.image_size
train_pipeline = __shapes.train_pipeline
test_pipeline = __shapes.test_pipeline
train_dataloader = dict(__shapes.train_dataloader, _delete_=True)
val_dataloader = dict(__shapes.val_dataloader, _delete_=True)
test_dataloader = dict(__shapes.test_dataloader, _delete_=True)
val_evaluator = dict(__shapes.val_evaluator, _delete_=True)
test_evaluator = dict(__shapes.test_evaluator, _delete_=True)
max_epochs = __shapes.max_epochs
train_cfg = dict(__shapes.train_cfg, _delete_=True)

# ---------------------------------------------------------------------------
# Model: RTMDet-tiny trained from scratch.
# ---------------------------------------------------------------------------
model = dict(
    # From scratch: the CSPNeXt ImageNet checkpoint cannot be downloaded here.
    backbone=dict(init_cfg=None),
    bbox_head=dict(num_classes=__shapes.num_classes))

# ---------------------------------------------------------------------------
# Schedule: RTMDet's recipe (AdamW lr 4e-3, weight decay 0.05 without decay
# on norms and biases, linear warm-up, cosine decay to lr x 0.05 over the
# second half, EMA) scaled to the 1200-iteration run: a 60-iteration warm-up
# (RTMDet: 1000) and the EMA of the RT-DETRv2 demo (momentum 2e-3, warm-up
# gamma 100; RTMDet: 2e-4, 2000). The stage-2 pipeline switch is dropped.
# ---------------------------------------------------------------------------
base_lr = 0.004
param_scheduler = [
    dict(type='LinearLR', start_factor=1.0e-5, by_epoch=False, begin=0, end=60),
    dict(type='CosineAnnealingLR', eta_min=base_lr * 0.05,
         begin=max_epochs // 2, end=max_epochs, T_max=max_epochs // 2,
         by_epoch=True, convert_to_iter_based=True),
]
custom_hooks = [
    dict(type='EMAHook', ema_type='ExpMomentumEMA', momentum=2e-3, gamma=100,
         update_buffers=True, priority=49),
]

default_hooks = dict(
    logger=dict(interval=10),                       # progress every 10 iterations
    checkpoint=dict(interval=3, max_keep_ckpts=1))  # with every evaluation
randomness = dict(seed=0)
