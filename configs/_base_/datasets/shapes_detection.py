# The bundled synthetic shapes dataset (COCO format, generated without any
# download by `python tools/misc/make_demo_data.py`, i.e.
# `rtdetr_mm.testing.synthetic.make_synthetic_coco('data/shapes')`): 400 training and
# 100 validation images of 256-320 px with 0-8 objects of 5 shape classes
# (8 px up to 40% of the image, clutter, overlap, ~10% without objects).
#
# Shared by the RT-DETRv2 demo and by the comparison configs
# (configs/comparison/), so that every model sees the same data, input size,
# pipeline, evaluator and number of epochs. Deliberately light: horizontal flip
# and a fixed-size resize, no photometric or geometric augmentation, so the
# comparison measures the models rather than their augmentation recipes.
#
# How a child uses it: mmengine refuses two `_base_` files that define the
# same keys, and full mmdet configs (e.g. `mmdet::dino/...`) carry their own
# COCO data keys. The comparison configs therefore inherit the mmdet config
# and read this file with `mmengine.Config.fromfile`, replacing the data keys
# as a whole (`_delete_=True`); see configs/comparison/*.py.
# mmdet's CocoDataset plus annotation checks when it is built (category names
# vs metainfo.classes, unknown ids, missing image files, degenerate boxes
# clipped or dropped with counts logged: rtdetr_mm/datasets/coco.py).
# Every pipeline loads with mmcv's LoadImageFromFile by name: mmdet's own
# tools look for exactly that class (DetInferencer; analyze_results.py keeps
# only it and LoadAnnotations of the train pipeline). The dataset names the
# image file, its id and why it cannot be read (missing, empty, does not
# decode) if it fails.
dataset_type = 'RTDETRv2CocoDataset'
data_root = 'data/shapes/'  # made by tools/misc/make_demo_data.py (git-ignored)
backend_args = None         # file client arguments (None: local disk)

# rtdetr_mm.testing.synthetic.DEFAULT_CLASSES, in category-id order (1..5).
classes = ('circle', 'square', 'triangle', 'ring', 'cross')
num_classes = len(classes)  # for the heads of the configs that use this file
metainfo = dict(classes=classes)

# (height, width) of the network input for training and evaluation. Every
# image (256-320 px) is resized to it without keeping the aspect ratio, so
# there is no padding, the batch shape is fixed and a multiple of 32 (the
# largest feature stride of every compared model). mmdet's Resize takes
# (width, height), hence `image_size[::-1]` below. A child that changes it
# must redefine the pipelines (they are resolved when this file is parsed).
image_size = (256, 256)

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomFlip', prob=0.5),  # horizontal
    dict(type='Resize', scale=image_size[::-1], keep_ratio=False),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    # mmcv's loader by name: mmdet's DetInferencer looks for exactly this
    # type (RTDETRv2CocoDataset still names the image if it fails).
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=image_size[::-1], keep_ratio=False),
    # Loaded after the resize: the evaluator reads the original boxes from the
    # annotation file; these are only drawn by the visualizer.
    dict(type='LoadAnnotations', with_bbox=True),
    # scale_factor takes the predictions back to original-image pixels.
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]

train_dataloader = dict(
    batch_size=4,             # one process: 400 images = 100 iterations per epoch
    num_workers=2,            # this 2-core machine
    persistent_workers=True,  # keep the workers between epochs
    drop_last=True,           # every iteration sees a full batch
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=None,       # plain batches (no aspect-ratio grouping: fixed size)
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='images/train/'),
        # Images without objects are kept (they teach "nothing here").
        filter_cfg=dict(filter_empty_gt=False, min_size=1),
        pipeline=train_pipeline,
        backend_args=backend_args))
val_dataloader = dict(
    batch_size=8,   # fixed-size inputs: the batch size does not change results
    num_workers=2,
    persistent_workers=True,
    drop_last=False,  # evaluate every image
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='images/val/'),
        test_mode=True,  # no filtering, no GT needed by the pipeline
        pipeline=test_pipeline,
        backend_args=backend_args))
test_dataloader = val_dataloader  # the validation split is the test split

# COCO bbox AP (pycocotools) on the validation json, in original-image pixels;
# AP50/AP75 and APs/APm/APl use mmdet's default proposal_nums (100, 300, 1000)
# for every model alike.
val_evaluator = dict(
    type='CocoMetric',
    ann_file=data_root + 'annotations/instances_val.json',
    metric='bbox',
    format_only=False,
    classwise=True,  # also log the AP of every class
    backend_args=backend_args)
test_evaluator = val_evaluator

# Schedule length shared by every model trained on this data (each model keeps
# its own optimizer and learning-rate shape, scaled to this length):
# 12 epochs x 100 iterations = 1200 iterations (about 10 minutes of RT-DETRv2
# demo training on 2 CPU cores), COCO evaluation every 3 epochs.
max_epochs = 12
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=3)
# NOTE: the RT-DETRv2 demo validates every epoch (its own loop, val_interval=1).
