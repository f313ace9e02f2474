# Runtime defaults (mmdet's, plus the RT-DETRv2 EMA). Registered names are
# looked up in mmdet's registries; `custom_imports` makes mmengine import
# rtdetr_mm (which registers the plugin's classes there) before building.
default_scope = 'mmdet'
custom_imports = dict(imports=['rtdetr_mm'], allow_failed_imports=False)

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),  # log every 50 iterations
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(
        type='CheckpointHook',
        interval=1,                 # save every epoch (official checkpoint_freq 1)
        max_keep_ckpts=3,           # keep the 3 newest epoch_*.pth (+ the best)
        save_best='coco/bbox_mAP',  # also keep best_coco_bbox_mAP_epoch_*.pth
        rule='greater'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='DetVisualizationHook'))

custom_hooks = [
    # Official ModelEMA(decay=0.9999, warmups=2000): at its k-th update the
    # EMA keeps d_k = 0.9999 * (1 - exp(-k / 2000)) of itself. mmdet's
    # ExpMomentumEMA uses momentum m_k = (1 - 1e-4) * exp(-k / 2000) + 1e-4 =
    # 1 - d_k at its k-th update for k >= 2 (tests/test_configs_base.py
    # checks 5000 updates). NOTE: the only difference is the first update,
    # where mmengine copies the weights (d_1 = 0) and the official code keeps
    # 5e-4 of the initial weights; after the 2nd update the averaged weights
    # agree to float32 rounding. Validation and `save_best` use the EMA
    # weights, as the official code.
    dict(type='EMAHook',
         ema_type='ExpMomentumEMA',
         momentum=1e-4,        # 1 - official decay 0.9999
         gamma=2000,           # official warmups
         update_buffers=True,  # average BN statistics too, as official
         priority=49),         # just above NORMAL, as mmdet's DETR/YOLO configs
]

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))

vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='DetLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=True)

log_level = 'INFO'
load_from = None  # a checkpoint to fine-tune from (weights only)
resume = False    # True: resume from the latest checkpoint in work_dir
