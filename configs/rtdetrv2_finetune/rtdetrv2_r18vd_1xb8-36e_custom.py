# Fine-tune RT-DETRv2-S (r18vd, COCO-pretrained) on your own COCO-format
# dataset, one GPU x 8 images. Edit the "Your dataset" block, convert the
# official or Hugging Face COCO weights once (README, "Converting weights"),
# check the data, then train:
#
#   python tools/model_converters/rtdetrv2_to_mmdet.py PekingU-rtdetr_v2_r18vd/ \
#       checkpoints/rtdetrv2_r18vd_coco.pth
#   python tools/misc/check_dataset.py configs/rtdetrv2_finetune/rtdetrv2_r18vd_1xb8-36e_custom.py
#   python tools/train.py configs/rtdetrv2_finetune/rtdetrv2_r18vd_1xb8-36e_custom.py
#
# Every seed-script knob is a key of this config chain (README, "Fine-tuning
# knobs"); override any of them with --cfg-options.
_base_ = '../rtdetrv2/rtdetrv2_r18vd_4xb4-120e_coco.py'

# ----------------------------- Your dataset --------------------------------
# (The r50vd fine-tune config repeats this file's blocks on purpose: each is
# the one file a user copies and edits. A shared base cannot hold them:
# mmengine refuses two `_base_` files that define the same keys, and the
# size config already defines train_dataloader and friends.)
data_root = 'data/my_dataset/'
train_ann_file = 'annotations/instances_train.json'
train_img_dir = 'images/train/'
val_ann_file = 'annotations/instances_val.json'
val_img_dir = 'images/val/'
# Class names exactly as the json `categories` names them. Labels follow this
# order; the json category ids may be anything (1-based, gaps): mmdet maps
# categories by name. A tuple, even for one class: ('cat',).
classes = ('cat', 'dog')
# ---------------------------------------------------------------------------

metainfo = dict(classes=classes)
# COCO weights converted by tools/model_converters/rtdetrv2_to_mmdet.py. The
# layers whose shape depends on the number of classes (enc_score_head,
# dec_score_head.*, denoising_class_embed) do not fit and are re-initialised;
# the log names them.
load_from = 'checkpoints/rtdetrv2_r18vd_coco.pth'

model = dict(bbox_head=dict(num_classes=len(classes)))

train_dataloader = dict(
    batch_size=8,  # TRAIN_BATCH per GPU
    dataset=dict(data_root=data_root, ann_file=train_ann_file,
                 data_prefix=dict(img=train_img_dir), metainfo=metainfo))
val_dataloader = dict(
    batch_size=8,  # VAL_BATCH per GPU
    dataset=dict(data_root=data_root, ann_file=val_ann_file,
                 data_prefix=dict(img=val_img_dir), metainfo=metainfo))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + val_ann_file)
test_evaluator = val_evaluator

# Fewer epochs than COCO's 120 (public fine-tuning recipes use 30-40); strong
# augmentation still stops 3 epochs before the end (r18 config).
max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)

# Public fine-tuning recipe: head (encoder, decoder, score/box heads, the
# re-initialised class layers) at 1e-4, pretrained backbone at 1e-5, no weight
# decay on norms, gradient clip 0.1 (inherited). First matching regex wins.
optim_wrapper = dict(
    optimizer=dict(lr=1e-4),  # LEARNING_RATE (head); WEIGHT_DECAY: 1e-4 inherited
    paramwise_cfg=dict(_delete_=True, groups=[
        dict(regex=r'^backbone\..*(norm|bn)', lr_mult=0.1, decay_mult=0.0),
        dict(regex=r'^backbone\.', lr_mult=0.1),
        dict(regex=r'(norm|bn)', decay_mult=0.0),
    ]))
# Linear warm-up over 300 optimizer steps (the public notebooks' value for
# small datasets; official COCO: 2000). WARMUP_RATIO: set warmup_ratio=0.05
# to warm up over 5% of the run instead.
param_scheduler = [dict(_base_.param_scheduler[0], warmup_steps=300)]
# EMA (official momentum 1e-4) with the official 2000-step EMA warm-up, whose
# decay grows as 0.9999 * (1 - exp(-k / 2000)): on a run of a few thousand
# steps the EMA follows the weights closely. It is not tied to the short LR
# warm-up above, which would freeze the EMA after ~1000 steps.
default_hooks = dict(ema=dict(warmup_steps=2000))
