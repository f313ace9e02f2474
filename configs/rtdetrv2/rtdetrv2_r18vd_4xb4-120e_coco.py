# RT-DETRv2-S: PResNet-18vd with trainable BN, half-width encoder, 3 decoder
# layers, 120 epochs, no multi-scale (official `rtdetrv2_r18vd_120e_coco.yml`,
# 48.1 AP with the re-run checkpoint).
_base_ = './rtdetrv2_r50vd_4xb4-72e_coco.py'

max_epochs = 120
train_cfg = dict(max_epochs=max_epochs)
model = dict(
    # The official S config sets `collate_fn.scales: ~`: no multi-scale.
    data_preprocessor=dict(_delete_=True, type='DetDataPreprocessor',
                           mean=[0.0, 0.0, 0.0], std=[255.0, 255.0, 255.0],
                           bgr_to_rgb=True, pad_size_divisor=32),
    # NOTE: transformers freezes the backbone BN of every size; the official
    # r18/r34 recipes train it, and so do we.
    backbone=dict(depth=18, freeze_at=-1, freeze_norm=False),
    neck=dict(in_channels=(128, 256, 512), expansion=0.5),
    bbox_head=dict(num_layers=3))
# The S recipe replaces the parameter groups: the backbone trains at the base
# lr (1e-4); only norms are exempt from weight decay.
optim_wrapper = dict(
    paramwise_cfg=dict(_delete_=True, groups=[
        dict(regex=r'(norm|bn)', decay_mult=0.0),
    ]))

# SyncBN as the official recipe (`sync_bn: True`): with a launcher (several
# GPUs) mmengine turns every trainable BatchNorm (backbone, which trains here,
# and encoder) into torch.nn.SyncBatchNorm, so batch statistics are taken over
# all GPUs. No effect in a single process; ignored on CPU (gloo,
# rtdetr_mm/engine/dist.py), where SyncBN cannot run and each rank uses the
# statistics of its own batch.
sync_bn = 'torch'

# Strong augmentation and multi-scale stop 3 epochs before the end (official
# policy epoch = max_epochs - 3); the EMA hook is inherited unchanged.
custom_hooks = [
    _base_.custom_hooks[0],
    dict(_base_.custom_hooks[1], stop_epochs_before_end=3),
]
