# RT-DETRv2-M*: PResNet-34vd with trainable BN, half-width encoder, 4 decoder
# layers, 120 epochs (official `rtdetrv2_r34vd_120e_coco.yml`, 49.9 AP).
# RT-DETRv2-S (r18 config) inherits this recipe.
_base_ = './rtdetrv2_r50vd_4xb4-72e_coco.py'

max_epochs = 120
train_cfg = dict(max_epochs=max_epochs)
model = dict(
    # NOTE: transformers freezes the backbone BN of every size; the official
    # r18/r34 recipes train it, and so do we.
    backbone=dict(depth=34, freeze_at=-1, freeze_norm=False),
    neck=dict(in_channels=(128, 256, 512), expansion=0.5),
    bbox_head=dict(num_layers=4))
# Backbone at lr x 0.5 (5e-5), its norms without decay; encoder/decoder norms
# and biases without decay.
optim_wrapper = dict(
    paramwise_cfg=dict(groups=[
        dict(regex=r'^backbone\..*(norm|bn)', lr_mult=0.5, decay_mult=0.0),
        dict(regex=r'^backbone\.', lr_mult=0.5),
        dict(regex=r'^(neck|bbox_head)\..*(norm|bn|bias)', decay_mult=0.0),
    ]))

# sync_bn = 'torch' comes from configs/_base_/default_runtime.py (every size);
# here it also covers the backbone's BN, which trains in this recipe.

# Strong augmentation and multi-scale stop 3 epochs before the end (official
# policy epoch = max_epochs - 3).
default_hooks = dict(aug_switch=dict(stop_epochs_before_end=3))
