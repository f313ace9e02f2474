# COCO detection data with the official RT-DETRv2 augmentation, in mmdet 3.3
# transforms. Images are resized to a fixed square (no aspect keep, no
# padding) and the model sees RGB / 255 (see the model's data_preprocessor).
dataset_type = 'CocoDataset'
data_root = 'data/coco/'
backend_args = None

# (height, width) of the network input for training and evaluation.
image_size = (640, 640)

# Strong augmentation, switched off for the last epochs by
# RTDETRv2AugSwitchHook (see default_runtime / the size configs).
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    # NOTE: torchvision's RandomPhotometricDistort(p=0.5) applies each of
    # brightness (0.875-1.125), contrast (0.5-1.5), saturation (0.5-1.5) and
    # hue (+-0.05) with p 0.5; mmdet's PhotoMetricDistortion does the same
    # with its own ranges below (hue in degrees, 0.05 * 180 = 9).
    dict(type='RandomApply', prob=0.5, transforms=[
        dict(type='PhotoMetricDistortion', brightness_delta=32, contrast_range=(0.5, 1.5),
             saturation_range=(0.5, 1.5), hue_delta=9)]),
    # Zoom-out (torchvision RandomZoomOut: canvas 1-4x, fill 0, p 0.5).
    dict(type='RandomApply', prob=0.5, transforms=[
        dict(type='Expand', mean=(0, 0, 0), to_rgb=False, ratio_range=(1, 4))]),
    # IoU crop (torchvision RandomIoUCrop, p 0.8). NOTE: mmdet's
    # MinIoURandomCrop samples crops with the same min-IoU set and a 0.3
    # minimum side, a close but not identical sampler.
    dict(type='RandomApply', prob=0.8, transforms=[
        dict(type='MinIoURandomCrop', min_ious=(0.1, 0.3, 0.5, 0.7, 0.9),
             min_crop_size=0.3)]),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1, 1), keep_empty=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='Resize', scale=image_size, keep_ratio=False),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1, 1), keep_empty=True),
    dict(type='PackDetInputs'),
]
# The pipeline of the last epochs: no photometric distortion, zoom-out or crop.
train_pipeline_no_strong_aug = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1, 1), keep_empty=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='Resize', scale=image_size, keep_ratio=False),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1, 1), keep_empty=True),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=image_size, keep_ratio=False),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]

train_dataloader = dict(
    batch_size=4,          # per GPU; the official total is 16 (4 GPUs x 4)
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/instances_train2017.json',
        data_prefix=dict(img='train2017/'),
        # Images without objects are kept, as the official code keeps them.
        filter_cfg=dict(filter_empty_gt=False, min_size=1),
        pipeline=train_pipeline,
        backend_args=backend_args))
val_dataloader = dict(
    batch_size=8,          # per GPU; the official total is 32
    num_workers=4,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/instances_val2017.json',
        data_prefix=dict(img='val2017/'),
        test_mode=True,
        pipeline=test_pipeline,
        backend_args=backend_args))
test_dataloader = val_dataloader

val_evaluator = dict(
    type='CocoMetric',
    ann_file=data_root + 'annotations/instances_val2017.json',
    metric='bbox',
    classwise=True,
    format_only=False,
    backend_args=backend_args)
test_evaluator = val_evaluator
