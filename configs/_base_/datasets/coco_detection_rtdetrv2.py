# COCO detection data with the official RT-DETRv2 recipe
# (`rtdetrv2_pytorch/configs/rtdetrv2/include/dataloader.yml`) written with
# mmdet 3.3 transforms. Every image is resized to a fixed square without
# keeping the aspect ratio (so there is no padding), and the model sees
# RGB / 255 (mean 0, std 255 in the model's data_preprocessor).
# Multi-scale training (480-800) is not here: it resizes whole batches in the
# model's data_preprocessor (RTDETRv2BatchResize, see the size configs).
# mmdet's CocoDataset plus annotation checks when it is built (category names
# vs metainfo.classes, unknown ids, missing image files, degenerate boxes
# clipped or dropped with counts logged: rtdetr_mm/datasets/coco.py).
# Every pipeline loads with mmcv's LoadImageFromFile by name: mmdet's own
# tools look for exactly that class (DetInferencer; analyze_results.py keeps
# only it and LoadAnnotations of the train pipeline). The dataset names the
# image file, its id and why it cannot be read (missing, empty, does not
# decode) if it fails.
dataset_type = 'RTDETRv2CocoDataset'
data_root = 'data/coco/'
backend_args = None  # file client arguments (None: local disk)

# IMAGE_SIZE: (height, width) of the network input for training and
# evaluation, multiples of 32 (the largest feature stride). RTDETRv2Runner
# writes the final value (after child configs and --cfg-options) into every
# Resize below and into RTDETRv2AugSwitchHook's pipeline; the multi-scale
# range and the decoder's anchors follow it. The official models are trained
# and exported at 640x640.
image_size = (640, 640)

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    # torchvision RandomPhotometricDistort(p=0.5): brightness, contrast,
    # saturation, hue and a channel permutation are each applied with
    # p 0.5, contrast before or after the colour ops with p 0.5 - the same
    # structure as mmdet's PhotoMetricDistortion (each op p 0.5), so it is
    # NOT wrapped in RandomApply.
    # NOTE differences: brightness is multiplicative (x 0.875-1.125) in
    # torchvision, additive here (+-16 = 0.125 x mid-grey 128; mmdet's
    # default is 32); torchvision's contrast blends with the mean grey
    # level, mmdet's multiplies the pixels (a brightness-like change);
    # saturation scales HSV S here, blends with grey there; hue +-0.05 of the
    # circle = +-18 degrees (mmdet's float HSV hue is in [0, 360)). mmdet
    # does not clip to [0, 255] afterwards; torchvision does.
    dict(type='PhotoMetricDistortion',
         brightness_delta=16,          # additive, pixel units
         contrast_range=(0.5, 1.5),    # multiplicative factor range
         saturation_range=(0.5, 1.5),  # factor range on HSV saturation
         hue_delta=18),                # degrees
    # torchvision RandomZoomOut(fill=0, side_range=(1, 4), p=0.5): put the
    # image at a random place on a black canvas 1-4x its size. Expand's own
    # prob is set to 1 so that RandomApply's 0.5 is the only coin flip.
    dict(type='RandomApply', prob=0.5, transforms=[
        dict(type='Expand',
             mean=(0, 0, 0),       # canvas fill
             to_rgb=False,         # the fill is given in the image's BGR order
             ratio_range=(1, 4),   # canvas side / image side
             prob=1.0)]),
    # torchvision RandomIoUCrop (official p=0.8): random crop with 0.3-1 of
    # each side and aspect 0.5-2; each try draws a minimum IoU from
    # (0, 0.1, 0.3, 0.5, 0.7, 0.9, no crop). mmdet's MinIoURandomCrop adds
    # the 0 and the "no crop" choices itself, so min_ious lists the rest.
    # NOTE differences: mmdet requires the *minimum* IoU over all boxes to
    # reach the threshold (SSD), torchvision the *maximum* over the boxes
    # whose centre is in the crop, so mmdet falls back more often to the
    # "any crop" / "no crop" draws on crowded images; 50 tries instead of
    # 40; an image without boxes may be cropped here, never in torchvision.
    dict(type='RandomApply', prob=0.8, transforms=[
        dict(type='MinIoURandomCrop',
             min_ious=(0.1, 0.3, 0.5, 0.7, 0.9),  # thresholds besides 0 / no crop
             min_crop_size=0.3)]),                 # smallest crop side / image side
    # torchvision SanitizeBoundingBoxes(min_size=1): drop boxes smaller than
    # 1 px but keep images left without boxes. In mmdet that is
    # keep_empty=False (keep_empty=True returns None for such images and the
    # dataset draws another one). NOTE: mmdet keeps w > 1, torchvision w >= 1.
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1, 1), keep_empty=False),
    dict(type='RandomFlip', prob=0.5),  # horizontal
    dict(type='Resize', scale=image_size[::-1], keep_ratio=False),
    # The official pipeline sanitizes again after the resize (zoom-out then
    # resize can shrink boxes below 1 px).
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1, 1), keep_empty=False),
    dict(type='PackDetInputs'),
]
# The pipeline of the last epochs (RTDETRv2AugSwitchHook's switch_pipeline):
# the same without PhotoMetricDistortion, Expand (zoom-out) and
# MinIoURandomCrop, as the official `stop_epoch` policy.
train_pipeline_no_strong_aug = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1, 1), keep_empty=False),
    dict(type='RandomFlip', prob=0.5),
    dict(type='Resize', scale=image_size[::-1], keep_ratio=False),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1, 1), keep_empty=False),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    # mmcv's loader by name: mmdet's DetInferencer looks for exactly this
    # type (RTDETRv2CocoDataset still names the image if it fails).
    dict(type='LoadImageFromFile', backend_args=backend_args),
    # NOTE: the official evaluation resizes with PIL bilinear, mmdet with
    # cv2 bilinear (slightly different pixels).
    dict(type='Resize', scale=image_size[::-1], keep_ratio=False),
    # Loaded after the resize: the evaluator reads the original boxes from
    # the annotation file, these are only for visualisation.
    dict(type='LoadAnnotations', with_bbox=True),
    # scale_factor takes the predictions back to original-image pixels.
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]

train_dataloader = dict(
    batch_size=4,             # TRAIN_BATCH per GPU; official total 16 = 4 GPUs x 4
    num_workers=4,            # per GPU, as the official loader
    persistent_workers=True,  # RTDETRv2AugSwitchHook restarts them at the switch
    # Page-locked batches: the host-to-GPU copy runs asynchronously
    # (data_preprocessor non_blocking=True). On a machine without a GPU torch
    # warns once that it is ignored.
    pin_memory=True,
    drop_last=True,           # as the official train loader
    # Plain random batches as the official loader (no aspect-ratio grouping:
    # every image is resized to the same square anyway).
    # DefaultSampler that can resume inside an epoch (RTDETRv2EpochBasedTrainLoop).
    sampler=dict(type='RTDETRv2ResumableSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/instances_train2017.json',
        data_prefix=dict(img='train2017/'),
        # Images without objects are kept (the official code keeps them);
        # min_size drops images narrower/lower than 1 px (none in COCO).
        filter_cfg=dict(filter_empty_gt=False, min_size=1),
        pipeline=train_pipeline,
        backend_args=backend_args))
val_dataloader = dict(
    # per GPU: official total 32 = 4 GPUs x 8. With a fixed-size resize and
    # no padding the batch size does not change the results.
    batch_size=8,  # VAL_BATCH
    num_workers=4,
    persistent_workers=True,
    pin_memory=True,
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
    format_only=False,
    classwise=True,  # also log the AP of every class
    backend_args=backend_args)
test_evaluator = val_evaluator
