default_scope = 'mmdet'
custom_imports = dict(imports=['rtdetr_mm'], allow_failed_imports=False)

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # Keep the last checkpoints and the best one by COCO bbox mAP.
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3,
                    save_best='coco/bbox_mAP', rule='greater'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='DetVisualizationHook'))

custom_hooks = [
    # Official ModelEMA: decay 0.9999 * (1 - exp(-updates / 2000)); mmdet's
    # ExpMomentumEMA with momentum 1e-4 and gamma 2000 is the same formula.
    # The EMA weights are what is validated and saved as best.
    dict(type='EMAHook', ema_type='ExpMomentumEMA', momentum=1e-4, gamma=2000,
         update_buffers=True, priority=49),
]

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))

vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='DetLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=True)

log_level = 'INFO'
load_from = None
resume = False
