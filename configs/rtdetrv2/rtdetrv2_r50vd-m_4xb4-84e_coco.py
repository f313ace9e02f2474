# RT-DETRv2-M: the L model with a half-width encoder (expansion 0.5), trained
# with 6 decoder layers and evaluated at the 3rd (eval_idx=2), 84 epochs
# (official `rtdetrv2_r50vd_m_7x_coco.yml`, 51.9 AP).
# NOTE: transformers has no eval_idx and runs all 6 layers for this model;
# we follow the official code.
_base_ = './rtdetrv2_r50vd_4xb4-72e_coco.py'

max_epochs = 84
train_cfg = dict(max_epochs=max_epochs)
model = dict(neck=dict(expansion=0.5), bbox_head=dict(eval_idx=2))

# Strong augmentation and multi-scale stop 3 epochs before the end (official
# policy epoch = max_epochs - 3).
default_hooks = dict(aug_switch=dict(stop_epochs_before_end=3))
