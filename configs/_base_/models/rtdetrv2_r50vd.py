# RT-DETRv2-L (ResNet50-vd) model, the official `include/rtdetrv2_r50vd.yml`.
# Every size config inherits this file and overrides what differs.
num_classes = 80  # object classes (sigmoid logits, no background logit)

model = dict(
    type='RTDETRv2',
    reparameterize=True,  # inference runs a cached fused copy (BN folded, RepVGG merged)
    channels_last=True,   # the fused copy runs NHWC (same values, faster; docs/performance.md)
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        # The official model sees RGB pixels / 255: no mean/std normalisation.
        mean=[0.0, 0.0, 0.0],
        std=[255.0, 255.0, 255.0],
        bgr_to_rgb=True,
        # Inputs are resized to a fixed size, so no padding is needed; 32 is
        # the largest stride and keeps odd user sizes valid.
        pad_size_divisor=32,
        # The batch goes to the GPU without waiting (with the loaders'
        # pin_memory, an asynchronous copy); the same stream's first kernel
        # waits for it. No effect on the CPU.
        non_blocking=True),
    backbone=dict(
        type='PResNet',
        depth=50,           # 18 / 34 / 50 / 101
        variant='d',        # ResNet-vd: deep stem + avg-pool shortcuts
        num_stages=4,
        return_idx=(1, 2, 3),  # strides 8, 16, 32
        freeze_at=0,        # 0: stem frozen; -1: nothing frozen
        freeze_norm=True,   # all BN -> FrozenBatchNorm2d (r50/r101); r18/r34 train BN
        with_cp=False,      # activation checkpointing: less memory, one more forward per block
        init_cfg=None),     # ImageNet weights: see README "Pretrained backbones"
    neck=dict(
        type='RTDETRv2HybridEncoder',
        in_channels=(512, 1024, 2048),  # backbone output channels (strides 8, 16, 32)
        hidden_dim=256,          # channels of every encoder output (384 for X)
        with_cp=False,           # activation checkpointing of AIFI and the CSP blocks
        use_encoder_idx=(2,),    # AIFI transformer layer(s) only on stride 32
        num_encoder_layers=1,
        num_heads=8,             # AIFI attention heads
        dim_feedforward=1024,    # AIFI FFN width (2048 for X)
        dropout=0.0,
        enc_act_cfg=dict(type='GELU'),  # AIFI FFN
        expansion=1.0,           # CSP-RepVGG hidden width ratio (0.5 for S/M*/M)
        depth_mult=1.0,          # RepVGG blocks per CSP layer = round(3 * depth_mult)
        act_cfg=dict(type='SiLU')),  # CCFF conv blocks
    bbox_head=dict(
        type='RTDETRv2Head',
        num_classes=num_classes,
        in_channels=(256, 256, 256),
        hidden_dim=256,
        num_levels=3,
        num_points=(4, 4, 4),      # deformable sampling points per level
        num_heads=8,
        num_layers=6,              # decoder layers (S 3, M* 4, M/L/X 6)
        dim_feedforward=1024,
        dropout=0.0,
        num_queries=300,           # object queries = detections kept per image
        # Contrastive denoising (training only): query budget (0 disables it),
        # label flip probability / 2, box corner noise relative to half the size.
        dn_cfg=dict(num_denoising=100, label_noise_ratio=0.5, box_noise_scale=1.0),
        eval_idx=-1,               # decoder layer used at inference (M: 2)
        cross_attn_method='default',  # 'discrete' = no grid_sample (old TensorRT)
        # Classification loss: 'vfl' (official), 'focal' or 'bce'; alpha/gamma
        # None take the family's official defaults (VFL 0.75/2, focal 0.25/2);
        # eos_coef weights the rows of queries matched to no object (1.0 =
        # official); label_smoothing smooths the one-hot targets.
        loss_cls=dict(type='RTDETRv2ClassificationLoss', loss_type='vfl',
                      alpha=None, gamma=None, eos_coef=1.0, label_smoothing=0.0,
                      loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=5.0),     # on cxcywh, normalised
        loss_iou=dict(type='GIoULoss', loss_weight=2.0)),
    train_cfg=dict(
        # Hungarian matching cost: 2 * focal class cost (its own alpha/gamma)
        # + 5 * L1 (cxcywh normalised) + 2 * (-GIoU). mmdet's HungarianAssigner
        # with the same costs, matching all decoder layers and images of a step
        # at once (one device-to-host copy; mmdet's 'HungarianAssigner' also
        # works, per image).
        assigner=dict(
            type='RTDETRv2HungarianAssigner',
            match_costs=[
                # eps 1e-8 inside the logs, as the official matcher (mmdet: 1e-12).
                dict(type='FocalLossCost', weight=2.0, alpha=0.25, gamma=2.0, eps=1e-8),
                dict(type='BBoxL1Cost', weight=5.0, box_format='xywh'),
                dict(type='IoUCost', iou_mode='giou', weight=2.0),
            ])),
    test_cfg=dict(max_per_img=300))
