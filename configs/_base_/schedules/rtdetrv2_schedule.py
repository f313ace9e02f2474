# Official RT-DETRv2 optimisation (`include/optimizer.yml`): AdamW, a linear
# warm-up over the first 2000 iterations, then a constant learning rate (the
# official MultiStepLR milestone is epoch 1000, i.e. never), gradient-norm
# clipping at 0.1, 72 epochs for L/X.
optim_wrapper = dict(
    # fp32; mmengine's OptimWrapper, except that a non-finite loss skips
    # backward and step on every rank (the nonfinite hook then stops the run
    # naming the loss terms). USE_BF16 / USE_FP16: type='RTDETRv2AmpOptimWrapper'
    # with dtype='bfloat16' (CPU or GPU) or dtype='float16' (loss scaling; CUDA, or a
    # CPU with allow_cpu_fp16=True: emulated there, for testing the scaler).
    type='RTDETRv2OptimWrapper',
    # GRAD_ACCUM: optimizer step every N micro-batches (effective batch =
    # train_dataloader.batch_size x N x GPUs); the EMA updates per step.
    accumulative_counts=1,
    optimizer=dict(
        type='AdamW',
        lr=1e-4,               # LEARNING_RATE: base lr at a total batch of 16
        betas=(0.9, 0.999),
        weight_decay=1e-4),    # WEIGHT_DECAY (norms exempt: paramwise_cfg)
    clip_grad=dict(max_norm=0.1, norm_type=2),  # L2 norm of all gradients
    # Parameter groups as the official `optimizer.params` regexes: the first
    # matching regex sets a parameter's multipliers of the base lr / weight
    # decay; unmatched parameters use the base values. L/M (r50): backbone
    # non-norm parameters at lr x 0.1 (1e-5; the backbone norms are frozen),
    # encoder/decoder norms without weight decay. The size configs replace
    # `groups` with their official rules (S: backbone at lr x 1, M*: x 0.5,
    # X: x 0.01). (Why not mmengine's custom_keys: the constructor's NOTE.)
    constructor='RTDETRv2OptimWrapperConstructor',
    paramwise_cfg=dict(groups=[
        dict(regex=r'^backbone\.(?!.*norm)', lr_mult=0.1),
        dict(regex=r'^(neck|bbox_head)\..*(norm|bn)', decay_mult=0.0),
    ]))

param_scheduler = [
    # Official LinearWarmup: the lr of optimizer step t (0-based) is
    # base_lr * min(1, (t + 1) / W), then constant (the official MultiStepLR
    # milestone is epoch 1000, i.e. never).
    # WARMUP_RATIO: W = round(warmup_ratio * all optimizer steps of the run),
    # computed when training starts from the dataset length, batch size,
    # world size, accumulative_counts and max_epochs; None keeps the official
    # W = warmup_steps = 2000. The EMA warm-up follows W (RTDETRv2EMAHook).
    dict(type='RTDETRv2LinearWarmupLR',
         warmup_ratio=None,
         warmup_steps=2000,
         by_epoch=True,                # begin/end in epochs (end: max_epochs) ...
         convert_to_iter_based=True),  # ... so that mmengine passes the epoch length
]

max_epochs = 72  # official L/X; the S/M*/M configs override it (120/120/84)
train_cfg = dict(
    type='RTDETRv2EpochBasedTrainLoop',
    max_epochs=max_epochs,
    # EVAL_RATE_EPOCHS: validate (and keep the best checkpoint) every N epochs;
    # a fraction validates inside epochs at evenly spaced iterations (0.5 =
    # twice per epoch) and saves a resumable iter_<n>.pth there. 1 = official.
    val_interval=1)
# mmengine's ValLoop; compute_loss=True also logs the validation loss
# (val/loss, val/loss_cls, ...) from the same forward as the predictions:
# --cfg-options val_cfg.compute_loss=True
val_cfg = dict(type='RTDETRv2ValLoop', compute_loss=False)
test_cfg = dict(type='TestLoop')

# `tools/train.py --auto-scale-lr` multiplies lr by (total batch / 16), the
# official total batch (4 GPUs x 4 images). Off by default.
auto_scale_lr = dict(enable=False, base_batch_size=16)
