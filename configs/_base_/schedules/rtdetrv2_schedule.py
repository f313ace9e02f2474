# Official RT-DETRv2 optimisation: AdamW, 2000-iteration linear warm-up, then
# a constant learning rate; gradient clipping 0.1. Parameter groups (backbone
# lr, no decay on norms) are set per size with RTDETRv2OptimWrapperConstructor.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-4),
    clip_grad=dict(max_norm=0.1, norm_type=2))

param_scheduler = [
    # The official factor is (step + 1) / 2000; LinearLR starts at
    # start_factor and reaches 1 at `end`.
    dict(type='LinearLR', start_factor=1.0 / 2000, by_epoch=False, begin=0, end=2000),
]

max_epochs = 72
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

# `--auto-scale-lr` scales lr by (total batch / 16), the official total batch.
auto_scale_lr = dict(enable=False, base_batch_size=16)
