# COMPARISON ONLY: mmdet's own Deformable DETR (ResNet-50, single stage, no
# box refinement), trained from scratch on the bundled shapes data with the
# same input size, pipeline, evaluator and number of epochs as the RT-DETRv2
# demo (configs/_base_/datasets/shapes_detection.py). Reduced so that it
# trains on a CPU: 2 encoder and 2 decoder layers (6 + 6), 100 queries (300).
# Deformable DETR keeps its own normalisation (ImageNet mean/std, RGB),
# losses and matcher.
_base_ = 'mmdet::deformable_detr/deformable-detr_r50_16xb2-50e_coco.py'

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
# Model: Deformable DETR reduced for a CPU, trained from scratch.
# ---------------------------------------------------------------------------
model = dict(
    num_queries=100,  # Deformable DETR: 300; the demo RT-DETRv2 has 100
    backbone=dict(
        # From scratch: nothing pretrained can be downloaded here
        # (`torchvision://resnet50`), so no stage is frozen and BN trains
        # (a frozen randomly initialised stem would never learn).
        init_cfg=None,
        frozen_stages=-1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False),
    encoder=dict(num_layers=2),  # Deformable DETR: 6
    decoder=dict(num_layers=2),  # Deformable DETR: 6
    bbox_head=dict(num_classes=__shapes.num_classes),
    test_cfg=dict(max_per_img=100))  # top-100, as many as queries (as mmdet)

# ---------------------------------------------------------------------------
# Schedule: Deformable DETR's recipe (AdamW, weight decay 1e-4, sampling
# offsets and reference points at lr x 0.1, lr x 0.1 at 4/5 of the run: epoch
# 40 of 50 -> 10 of 12) with the same short-run, from-scratch changes as the
# RT-DETRv2 demo and the DINO comparison: lr 4e-4 (recipe 2e-4), clip 1.0
# (0.1), a 60-iteration linear warm-up, and the backbone at the full lr
# (the recipe's lr x 0.1 is for a pretrained backbone).
# ---------------------------------------------------------------------------
optim_wrapper = dict(
    optimizer=dict(lr=4e-4),
    clip_grad=dict(max_norm=1.0),
    paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=1.0)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=60),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True,
         milestones=[10], gamma=0.1),
]

default_hooks = dict(
    logger=dict(interval=10),                       # progress every 10 iterations
    checkpoint=dict(interval=3, max_keep_ckpts=1))  # with every evaluation
randomness = dict(seed=0)
