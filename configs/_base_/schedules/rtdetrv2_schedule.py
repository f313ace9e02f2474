# Official RT-DETRv2 optimisation (`include/optimizer.yml`): AdamW, a linear
# warm-up over the first 2000 iterations, then a constant learning rate (the
# official MultiStepLR milestone is epoch 1000, i.e. never), gradient-norm
# clipping at 0.1, 72 epochs for L/X.
optim_wrapper = dict(
    type='OptimWrapper',  # fp32; AmpOptimWrapper (tools/train.py --amp) needs a GPU
    optimizer=dict(
        type='AdamW',
        lr=1e-4,               # base lr at a total batch of 16
        betas=(0.9, 0.999),
        weight_decay=1e-4),
    clip_grad=dict(max_norm=0.1, norm_type=2),  # L2 norm of all gradients
    # mmengine's DefaultOptimWrapperConstructor groups: the backbone trains at
    # lr x 0.1 (1e-5, official L/M), norm layers without weight decay.
    # NOTE: the size configs switch to RTDETRv2OptimWrapperConstructor and its
    # regex `groups` (the official per-size rules, e.g. backbone lr x 1 for S,
    # x 0.5 for M*, x 0.01 for X); that constructor does not read custom_keys
    # or norm_decay_mult.
    paramwise_cfg=dict(
        custom_keys={'backbone': dict(lr_mult=0.1)},
        norm_decay_mult=0.0))

param_scheduler = [
    # Official LinearWarmup: the lr of iteration t (0-based) is
    # base_lr * min(1, (t + 1) / 2000). mmengine's LinearLR with begin 0 and
    # end 2000 gives start_factor + (1 - start_factor) * t / 1999, which with
    # start_factor 1/2000 is exactly (t + 1) / 2000; after `end` the lr stays
    # at base_lr (no other scheduler: constant).
    dict(type='LinearLR', start_factor=1.0 / 2000, by_epoch=False, begin=0, end=2000),
]

max_epochs = 72  # official L/X; the S/M*/M configs override it (120/120/84)
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs,
                 val_interval=1)  # COCO evaluation after every epoch, as official
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

# `tools/train.py --auto-scale-lr` multiplies lr by (total batch / 16), the
# official total batch (4 GPUs x 4 images). Off by default.
auto_scale_lr = dict(enable=False, base_batch_size=16)
