# RT-DETRv2-L: PResNet-50vd, 6 decoder layers, 72 epochs on COCO, 4 GPUs x 4
# images (official `rtdetrv2_r50vd_6x_coco.yml`, 53.4 AP on val2017).
# Every other size inherits this file.
_base_ = [
    '../_base_/models/rtdetrv2_r50vd.py',
    '../_base_/datasets/coco_detection_rtdetrv2.py',
    '../_base_/schedules/rtdetrv2_schedule.py',
    '../_base_/default_runtime.py',
]

max_epochs = 72
train_cfg = dict(max_epochs=max_epochs)

# Official multi-scale training: every batch is resized (nearest) to a size
# drawn from 480, 512, ..., 800 (640 three times), until the last epochs.
# Written relative to the batch it receives (image_size), so the range follows
# image_size: 0.75 x 640 = 480 ... 1.25 x 640 = 800, multiples of 32.
model = dict(
    data_preprocessor=dict(batch_augments=[
        dict(type='RTDETRv2BatchResize',
             scale_ratios=[0.75, 0.8, 0.85, 0.9, 0.95, 1.0, 1.0, 1.0,
                           1.05, 1.1, 1.15, 1.2, 1.25],
             size_divisor=32,
             mode='nearest'),
    ]))

# Official stop_epoch policy: the last epoch(s) train without photometric
# distortion / zoom-out / IoU crop and without multi-scale (counted from the
# end, so changing max_epochs moves it). Override by name:
# default_hooks = dict(aug_switch=dict(stop_epochs_before_end=...)).
default_hooks = dict(
    aug_switch=dict(type='RTDETRv2AugSwitchHook', stop_epochs_before_end=1,
                    switch_pipeline={{_base_.train_pipeline_no_strong_aug}}))
