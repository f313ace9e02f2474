# Early stopping: end the training when the validation mAP has not improved
# for `patience` validations (mmengine's EarlyStoppingHook). List this file
# after your config's other bases:
#
#   _base_ = ['../rtdetrv2_finetune/rtdetrv2_r18vd_1xb8-36e_custom.py',
#             '../_base_/early_stopping.py']
#
# or copy `custom_hooks` into your config (a config that sets custom_hooks
# itself replaces this list: add the entry to it). Override a value with
# --cfg-options, e.g. custom_hooks.0.patience=20.
#
# When EarlyStoppingHook asks to stop (RTDETRv2EpochBasedTrainLoop):
# - before the aug switch (RTDETRv2AugSwitchHook: the last N epochs train
#   without strong augmentation / multi-scale; N = 1 for r50/r101, 3 for
#   r18/r34/r50-m): the epoch in progress is finished, then the N epochs
#   without strong augmentation, and the run ends there, as if max_epochs
#   had been set to that epoch;
# - within the last N epochs, or without the aug switch: the run ends right
#   after the validation that asked (inside an epoch too, with a fractional
#   train_cfg.val_interval).
# The best checkpoint (best_coco_bbox_mAP_*.pth) and a final checkpoint stay;
# the final one records the stop: --resume from it trains nothing.
custom_hooks = [
    dict(
        type='EarlyStoppingHook',
        # a metric key as the validation logs it; a key the validation does
        # not report stops the run at the first validation, listing the keys
        monitor='coco/bbox_mAP',
        # higher is better (mmengine would infer it from 'mAP' too)
        rule='greater',
        # validations (not epochs: train_cfg.val_interval=0.5 validates twice
        # an epoch) without improvement before the stop
        patience=10,
        # a validation improves when mAP >= best + min_delta (+0.1 mAP points
        # here); mmengine's default 0.1 would ask for +10 points
        min_delta=0.001),
]
