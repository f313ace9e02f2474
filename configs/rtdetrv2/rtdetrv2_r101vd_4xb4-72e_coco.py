# RT-DETRv2-X: PResNet-101vd, 384-channel encoder with a 2048-wide AIFI FFN,
# backbone lr 1e-6 (official `rtdetrv2_r101vd_6x_coco.yml`, 54.3 AP).
_base_ = './rtdetrv2_r50vd_4xb4-72e_coco.py'

model = dict(
    backbone=dict(depth=101),
    neck=dict(hidden_dim=384, dim_feedforward=2048),
    bbox_head=dict(in_channels=(384, 384, 384)))
optim_wrapper = dict(
    paramwise_cfg=dict(groups=[
        dict(regex=r'^backbone\.(?!.*norm)', lr_mult=0.01),
        dict(regex=r'^(neck|bbox_head)\..*(norm|bn)', decay_mult=0.0),
    ]))
