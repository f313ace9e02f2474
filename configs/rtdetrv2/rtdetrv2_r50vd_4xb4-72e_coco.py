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
# drawn from this list (640 three times), until the last epochs.
model = dict(
    data_preprocessor=dict(batch_augments=[
        dict(type='RTDETRv2BatchResize',
             scales=[480, 512, 544, 576, 608, 640, 640, 640, 672, 704, 736, 768, 800],
             mode='nearest'),
    ]))

# Parameter groups (first matching regex wins; multipliers of the base lr/wd):
# backbone non-norm parameters at lr x 0.1 (1e-5), encoder/decoder norms
# without weight decay. The backbone norms are frozen for r50/r101.
optim_wrapper = dict(
    constructor='RTDETRv2OptimWrapperConstructor',
    paramwise_cfg=dict(groups=[
        dict(regex=r'^backbone\.(?!.*norm)', lr_mult=0.1),
        dict(regex=r'^(neck|bbox_head)\..*(norm|bn)', decay_mult=0.0),
    ]))

# Official stop_epoch policy: the last epoch(s) train without photometric
# distortion / zoom-out / IoU crop and without multi-scale (counted from the
# end, so changing max_epochs moves it).
custom_hooks = [
    dict(type='EMAHook', ema_type='ExpMomentumEMA', momentum=1e-4, gamma=2000,
         update_buffers=True, priority=49),
    dict(type='RTDETRv2AugSwitchHook', stop_epochs_before_end=1,
         switch_pipeline={{_base_.train_pipeline_no_strong_aug}}),
]
