# RT-DETRv2-S: the M* recipe (r34 config) with PResNet-18vd, 3 decoder
# layers, no multi-scale and the backbone at the base lr (official
# `rtdetrv2_r18vd_120e_coco.yml`, 48.1 AP with the re-run checkpoint).
_base_ = './rtdetrv2_r34vd_4xb4-120e_coco.py'

model = dict(
    # The official S config sets `collate_fn.scales: ~`: no multi-scale.
    data_preprocessor=dict(batch_augments=None),
    backbone=dict(depth=18),
    bbox_head=dict(num_layers=3))
# The S recipe replaces the parameter groups: the backbone trains at the base
# lr (1e-4); only norms are exempt from weight decay.
optim_wrapper = dict(
    paramwise_cfg=dict(groups=[
        dict(regex=r'(norm|bn)', decay_mult=0.0),
    ]))
