"""A tiny mmdet detector and COCO set for Runner-level tests (CPU, seconds).

RetinaNet on a ResNet-18 with 8 base channels (no pretrained weights) and a
2-image synthetic COCO set; the config carries the parts of an RT-DETRv2 run
that put state into a checkpoint: EMAHook, parameter schedulers, AdamW with
per-key lr multipliers, validation with CocoMetric and ``save_best``.
"""
import json
import os
import os.path as osp

import numpy as np


def make_coco(root):
    import cv2
    os.makedirs(osp.join(root, 'img'), exist_ok=True)
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for i in range(2):
        img = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
        cv2.imwrite(osp.join(root, 'img', f'{i}.jpg'), img)
        images.append(dict(id=i, file_name=f'{i}.jpg', height=64, width=64))
        annotations.append(
            dict(id=i + 1, image_id=i, category_id=1, bbox=[8, 8, 30, 30],
                 area=900, iscrowd=0))
    with open(osp.join(root, 'ann.json'), 'w') as f:
        json.dump(dict(images=images, annotations=annotations,
                       categories=[dict(id=1, name='thing')]), f)


def tiny_cfg(data_root, work_dir, max_epochs=1):
    """A complete mmdet config: a tiny RetinaNet on :func:`make_tiny_coco`'s
    data, mmdet's usual schedule and runtime, one worker, gloo."""
    from mmengine.config import Config
    return Config(dict(
        default_scope='mmdet',
        model=_retinanet(),
        work_dir=work_dir,
        **_data(data_root),
        train_cfg=dict(
            type='EpochBasedTrainLoop', max_epochs=max_epochs,
            val_interval=1),
        val_cfg=dict(type='ValLoop'),
        test_cfg=dict(type='TestLoop'),
        optim_wrapper=dict(
            type='OptimWrapper',
            optimizer=dict(type='AdamW', lr=1e-4, weight_decay=1e-4),
            clip_grad=dict(max_norm=0.1, norm_type=2),
            paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.1)})),
        param_scheduler=[
            dict(type='LinearLR', start_factor=0.001, by_epoch=False,
                 begin=0, end=2000),
            dict(type='MultiStepLR', begin=0, end=12, by_epoch=True,
                 milestones=[11], gamma=0.1)
        ],
        custom_hooks=[
            dict(type='EMAHook', ema_type='ExpMomentumEMA', momentum=0.0001,
                 update_buffers=True, priority=49)
        ],
        default_hooks=dict(
            timer=dict(type='IterTimerHook'),
            logger=dict(type='LoggerHook', interval=1),
            param_scheduler=dict(type='ParamSchedulerHook'),
            checkpoint=dict(
                type='CheckpointHook', interval=1, max_keep_ckpts=3,
                save_best='coco/bbox_mAP', rule='greater'),
            sampler_seed=dict(type='DistSamplerSeedHook'),
            visualization=dict(type='DetVisualizationHook')),
        visualizer=dict(
            type='DetLocalVisualizer', name='visualizer',
            vis_backends=[dict(type='LocalVisBackend')]),
        env_cfg=dict(
            cudnn_benchmark=False,
            mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
            dist_cfg=dict(backend='gloo')),
        log_processor=dict(type='LogProcessor', window_size=1, by_epoch=True),
        log_level='WARNING',
        randomness=dict(seed=0),
    ))


def _data(data_root):
    """The train / val / test dataloaders and evaluators."""
    dataset = dict(
        type='CocoDataset', data_root=data_root, ann_file='ann.json',
        data_prefix=dict(img='img/'), metainfo=dict(classes=('thing', )),
        filter_cfg=dict(filter_empty_gt=False))
    train_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', with_bbox=True),
        dict(type='Resize', scale=(64, 64), keep_ratio=True),
        dict(type='PackDetInputs')
    ]
    test_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=(64, 64), keep_ratio=True),
        dict(type='LoadAnnotations', with_bbox=True),
        dict(type='PackDetInputs',
             meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                        'scale_factor'))
    ]
    evaluator = dict(type='CocoMetric', ann_file=osp.join(data_root, 'ann.json'),
                     metric='bbox')
    test_loader = dict(
        batch_size=1, num_workers=0,
        sampler=dict(type='DefaultSampler', shuffle=False),
        dataset=dict(dataset, pipeline=test_pipeline, test_mode=True))
    return dict(
        train_dataloader=dict(
            batch_size=1, num_workers=0,
            sampler=dict(type='DefaultSampler', shuffle=True),
            batch_sampler=dict(type='AspectRatioBatchSampler'),
            dataset=dict(dataset, pipeline=train_pipeline)),
        val_dataloader=test_loader, val_evaluator=evaluator,
        test_dataloader=test_loader, test_evaluator=evaluator)


def _retinanet():
    """A RetinaNet with an 8-channel ResNet-18 and one class."""
    return dict(
        type='RetinaNet',
        data_preprocessor=dict(
            type='DetDataPreprocessor', mean=[0, 0, 0], std=[255, 255, 255],
            bgr_to_rgb=True, pad_size_divisor=32),
        backbone=dict(
            type='ResNet', depth=18, base_channels=8, num_stages=4,
            out_indices=(1, 2, 3), frozen_stages=-1, norm_eval=False,
            init_cfg=None),
        neck=dict(
            type='FPN', in_channels=[16, 32, 64], out_channels=16,
            start_level=0, add_extra_convs='on_input', num_outs=3),
        bbox_head=dict(
            type='RetinaHead', num_classes=1, in_channels=16,
            stacked_convs=1, feat_channels=16,
            anchor_generator=dict(
                type='AnchorGenerator', octave_base_scale=4,
                scales_per_octave=1, ratios=[1.0], strides=[8, 16, 32]),
            bbox_coder=dict(
                type='DeltaXYWHBBoxCoder', target_means=[0., 0., 0., 0.],
                target_stds=[1., 1., 1., 1.]),
            loss_cls=dict(
                type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                loss_weight=1.0),
            loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
        train_cfg=dict(
            assigner=dict(
                type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4,
                min_pos_iou=0, ignore_iof_thr=-1),
            sampler=dict(type='PseudoSampler'), allowed_border=-1,
            pos_weight=-1, debug=False),
        test_cfg=dict(
            nms_pre=100, min_bbox_size=0, score_thr=0.0,
            nms=dict(type='nms', iou_threshold=0.5), max_per_img=10))
