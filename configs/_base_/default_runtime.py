# Runtime defaults (mmdet's, plus the RT-DETRv2 hooks, each a named
# default_hooks entry that a child config overrides by name). Registered names are
# looked up in mmdet's registries; `custom_imports` makes mmengine import
# rtdetr_mm (which registers the plugin's classes there) before building.
default_scope = 'mmdet'
custom_imports = dict(imports=['rtdetr_mm'], allow_failed_imports=False)
# mmengine's Runner plus the run-time knobs (image_size) and atomic
# checkpoint files; tools/train.py and tools/test.py build it from here.
runner_type = 'mmdet.RTDETRv2Runner'

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),  # log every 50 iterations
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(
        # CheckpointHook that writes a new checkpoint before deleting old ones,
        # and saves iter_<n>.pth at mid-epoch validations.
        type='RTDETRv2CheckpointHook',
        interval=1,                 # save every epoch (official checkpoint_freq 1)
        max_keep_ckpts=3,           # keep the 3 newest epoch_*.pth (+ the best)
        save_best='coco/bbox_mAP',  # also keep best_coco_bbox_mAP_epoch_*.pth
        rule='greater'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    # load_from a checkpoint of another number of classes (a COCO one, for
    # fine-tuning): the head's class layers stay at their initialisation and
    # the log names each; resuming from one is an error.
    class_mismatch=dict(type='RTDETRv2ClassMismatchHook'),
    visualization=dict(type='DetVisualizationHook'),
    # Before the first iteration (and before testing): the annotations of the
    # datasets this run uses against metainfo.classes and the head's
    # num_classes / num_queries / denoising budget; errors name the file,
    # image id, annotation id or config key (rtdetr_mm/datasets/validation/).
    # A default hook, so that child configs replacing custom_hooks keep it.
    dataset_check=dict(type='RTDETRv2DatasetCheckHook'),
    # The optim wrapper (RTDETRv2OptimWrapper) skips backward and step of a
    # non-finite loss on every rank; then 'raise' stops the run naming the
    # iteration and the loss terms, 'skip' goes on (at most max_skips in a
    # row). Checkpoints with NaN/inf weights are refused.
    nonfinite=dict(type='RTDETRv2NonFiniteLossHook', action='raise', max_skips=10,
                   check_checkpoints=True),
    # torch / CUDA / numpy / random states and the sampler seed are saved in
    # every checkpoint and restored on --resume, so an interrupted run
    # continues as if uninterrupted (exactly with num_workers=0; see the hook).
    random_state=dict(type='RTDETRv2RandomStateHook'),
    # Official ModelEMA(decay=0.9999, warmups=2000): at its k-th update the
    # EMA keeps d_k = 0.9999 * (1 - exp(-k / warmups)) of itself; it is
    # mmengine's ExpMomentumEMA (momentum 1e-4, gamma = warmups), except the
    # first update, where mmengine copies the weights. RTDETRv2EMAHook
    # updates once per optimizer step (not per accumulated micro-batch) and,
    # with warmup_steps=None, takes the LR warm-up length as EMA warm-up
    # (2000 unless WARMUP_RATIO is set). Validation, save_best and the saved
    # state_dict use the EMA weights, as the official code. Override by name:
    # default_hooks = dict(ema=dict(momentum=...)); ema=None turns it off
    # (RTDETRv2Runner accepts None for every named default hook).
    ema=dict(type='RTDETRv2EMAHook',
             momentum=1e-4,        # 1 - official decay 0.9999
             warmup_steps=None,    # None: follow the LR warm-up
             update_buffers=True))  # average BN statistics too, as official

# SyncBN for every model size, as the official runtime (`sync_bn: True`):
# with a launcher (several GPUs) mmengine turns every trainable BatchNorm
# (encoder, the head's input projections; the backbone's where it trains,
# r18/r34) into torch.nn.SyncBatchNorm, so batch statistics are taken over
# all GPUs and the ranks' running statistics stay equal. No effect in a
# single non-distributed process; ignored on CPU (gloo,
# rtdetr_mm/engine/dist.py), where SyncBN cannot run and each rank uses the
# statistics of its own batch.
sync_bn = 'torch'

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))

vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='DetLocalVisualizer', vis_backends=vis_backends, name='visualizer')
# mean_pattern: mmengine's, except validation keys (val/loss of
# val_cfg.compute_loss), logged as computed, not averaged over validations
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=True,
                     mean_pattern=r'^(?!val/).*(loss|time|data_time|grad_norm)')

log_level = 'INFO'
load_from = None  # a checkpoint to fine-tune from (weights only)
resume = False    # True: resume from the latest checkpoint in work_dir
