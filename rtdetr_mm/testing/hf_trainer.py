"""The transformers ``Trainer`` baseline of an rtdetr_mm config: transformers'
``RTDetrV2ForObjectDetection`` trained by transformers' ``Trainer`` on the
config's data, evaluated by the config's COCO evaluator
(``tools/analysis_tools/hf_trainer_baseline.py`` is its command line).

What the run shares with ``tools/train.py CONFIG`` and what it does not:

* **data**: the config's train / val / test datasets, built by mmdet as
  ``tools/train.py`` builds them (``RTDETRv2CocoDataset``: the same images,
  boxes clipped or dropped the same way, crowd boxes ignored, the same
  ``filter_cfg``), with an empty pipeline: the images are read with OpenCV
  (EXIF orientation applied, as mmcv does) and handed to transformers in RGB;
* **input size**: ``image_size`` (h, w) of the config; transformers' image
  processor resizes every image to it (aspect ratio not kept, as the
  configs' fixed-size ``Resize``) and scales pixels by 1 / 255 (the configs'
  ``data_preprocessor`` mean 0 / std 255; another mean / std is passed on);
* **model**: the config's architecture (:func:`hf_model_config`), checked
  by rtdetr_mm's own converter against the config (:func:`check_fits`);
  transformers' initialisation (seeded) or ``--init`` weights;
* **budget**: ``train_dataloader.batch_size`` per step, ``accumulative_counts``
  micro-batches per optimizer step, the optimizer steps of the config's run
  (or ``--max-steps``);
* **augmentation**: NOT the config's pipeline, but the one of transformers'
  object-detection fine-tuning guide (:data:`AUGMENTATION`);
* **optimisation**: AdamW with the config's parameter groups (its ``paramwise_cfg``
  regex rules matched against rtdetr_mm's name of each transformers parameter,
  so the groups are the same), the config's lr / weight decay / betas /
  gradient clip / warm-up, a constant lr after the warm-up (the configs'
  schedule); with seed-script knobs, those the Trainer expresses override
  these (:data:`KNOBS`) and the rest of the Trainer is transformers' defaults
  (:data:`TRAINER_DEFAULTS`), as in the script. No EMA (the Trainer has
  none). NOTE: the Trainer's warm-up gives step t (0-based) lr x t / W,
  rtdetr_mm's lr x (t + 1) / W (the official LinearWarmup): one step apart.

Nothing here is imported by ``import rtdetr_mm``: transformers' Trainer needs
``accelerate``, the augmentation needs ``albumentations`` (both pinned in
``requirements/tests.txt``), imported only when a run starts.
"""
import contextlib
import json
import math
import os
import os.path as osp
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

#: transformers' object-detection fine-tuning guide
#: (https://huggingface.co/docs/transformers/tasks/object_detection,
#: ``train_augment_and_transform``), pinned here as albumentations 2.0.8 code
AUGMENTATION = ('A.Compose([A.Perspective(p=0.1), A.HorizontalFlip(p=0.5), '
                'A.RandomBrightnessContrast(p=0.5), A.HueSaturationValue(p=0.1)], '
                'bbox_params=A.BboxParams(format="coco", label_fields=["category"], '
                'clip=True, min_area=25))')

#: what ``pip`` must add for this module (requirements/tests.txt pins them)
EXTRAS = ('accelerate', 'albumentations')

INSTALL_HINT = ('install them with `make install` (tools/install.sh installs '
                'requirements/tests.txt: albumentations and albucore with --no-deps, so '
                'that their opencv-python-headless does not replace the pinned opencv-python)')

#: the file the run writes into its work dir; compare.py --results reads it
RESULT_FILE = 'hf_trainer_result.json'
RESULT_FORMAT = 'rtdetr_mm.hf_trainer_baseline/1'

#: mmdet CocoMetric keys, as compare.py's AP columns read them
METRIC_KEYS = ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/bbox_mAP_75', 'coco/bbox_mAP_s',
               'coco/bbox_mAP_m', 'coco/bbox_mAP_l')

#: Seed-script knob -> what the Trainer run does with it:
#: ('args', TrainingArguments field) / ('model', RTDetrV2Config field): set;
#: ('config', why): CONFIG decides (same data and budget for every arm);
#: ('inert', why): the script set it without effect; not applied here either.
#: NOTE: FOCAL_GAMMA / FOCAL_ALPHA are inert as the seed script sets them
#: (``focal_gamma`` / ``focal_alpha``: no transformers fields); transformers'
#: (5.24) RT-DETR VFL reads ``focal_loss_gamma`` / ``focal_loss_alpha``
#: instead, which the script never sets. ``eos_coefficient`` only weights its
#: cross-entropy loss, which RT-DETR does not compute; ``label_smoothing``
#: and ``class_loss_coefficient`` are no transformers fields
#: (tests/test_tools/test_hf_trainer_baseline.py checks all five).
KNOBS = {
    'LEARNING_RATE': ('args', 'learning_rate'),
    'WEIGHT_DECAY': ('args', 'weight_decay'),
    'WARMUP_RATIO': ('args', 'warmup_steps'),
    'USE_FP16': ('args', 'fp16'),
    'USE_BF16': ('args', 'bf16'),
    'VAL_BATCH': ('args', 'per_device_eval_batch_size'),
    'EVAL_RATE_EPOCHS': ('args', 'eval_interval_epochs'),
    'USE_FOCAL_LOSS': ('model', 'use_focal_loss'),
    'MATCHER_CLASS_COST': ('model', 'matcher_class_cost'),
    'MATCHER_BBOX_COST': ('model', 'matcher_bbox_cost'),
    'TRAIN_BATCH': ('config', 'train_dataloader.batch_size'),
    'GRAD_ACCUM': ('config', 'optim_wrapper.accumulative_counts'),
    'EPOCHS': ('config', 'train_cfg.max_epochs'),
    'IMAGE_SIZE': ('config', 'image_size'),
    'FOCAL_GAMMA': ('inert', 'focal_gamma (no transformers field; its VFL reads '
                             'focal_loss_gamma)'),
    'FOCAL_ALPHA': ('inert', 'focal_alpha (no transformers field; its VFL reads '
                             'focal_loss_alpha)'),
    'LABEL_SMOOTHING_IN_MODEL': ('inert', 'label_smoothing (no transformers field)'),
    'EOS_COEF': ('inert', 'eos_coefficient (read by no RT-DETR loss)'),
    'CLASS_LOSS_COEF': ('inert', 'class_loss_coefficient (no transformers field; '
                                 'weight_loss_vfl stays 1.0)'),
}

#: The transformers fields an inert knob leaves at transformers' default
#: (what the script's model got), whatever CONFIG sets
INERT_DEFAULTS = {'CLASS_LOSS_COEF': ('weight_loss_vfl', 1.0),
                  'FOCAL_GAMMA': ('focal_loss_gamma', 2.0),
                  'FOCAL_ALPHA': ('focal_loss_alpha', 0.75)}

#: With --knobs, the Trainer settings none of the knobs covers are
#: transformers' defaults, as the script's Trainer had them
TRAINER_DEFAULTS = dict(lr_scheduler_type='linear', max_grad_norm=1.0)

#: PResNet depth -> transformers RTDetrResNetConfig arguments
#: (as rtdetr_mm.testing.hf_reference.SIZES, whose parity tests prove them)
BACKBONES = {
    18: dict(hidden_sizes=[64, 128, 256, 512], depths=[2, 2, 2, 2], layer_type='basic'),
    34: dict(hidden_sizes=[64, 128, 256, 512], depths=[3, 4, 6, 3], layer_type='basic'),
    50: dict(hidden_sizes=[256, 512, 1024, 2048], depths=[3, 4, 6, 3], layer_type='bottleneck'),
    101: dict(hidden_sizes=[256, 512, 1024, 2048], depths=[3, 4, 23, 3],
              layer_type='bottleneck'),
}


class BaselineError(ValueError):
    """Something in CONFIG, the knobs script or ``--init`` the run cannot use
    (the message names the key / file / knob, the value and what to do)."""


class MissingExtrasError(ImportError):
    """accelerate or albumentations is not installed (the message says how)."""


def require_extras() -> None:
    """Import what the run needs beyond rtdetr_mm's runtime, or raise
    :class:`MissingExtrasError` naming the missing packages and the fix."""
    import importlib
    missing = []
    for name in EXTRAS:
        try:
            importlib.import_module(name)
        except ImportError as err:
            missing.append(f'{name} ({err})')
    if missing:
        raise MissingExtrasError(
            'the transformers Trainer baseline needs ' + ', '.join(missing) + ': '
            + INSTALL_HINT)


# --------------------------------------------------------------------------
# Settings: CONFIG, then the knobs the Trainer can express
# --------------------------------------------------------------------------
@dataclass
class Setting:
    """One value of the run and where it came from."""
    target: str   # 'TrainingArguments.learning_rate', 'RTDetrV2Config.num_queries', ...
    value: Any
    source: str   # 'CONFIG optim_wrapper.optimizer.lr', 'knob LEARNING_RATE', ...


@dataclass
class Plan:
    """Everything the run needs, derived from CONFIG (+ knobs, + command line)."""
    classes: Tuple[str, ...]
    image_size: Tuple[int, int]            # (h, w)
    train_batch: int
    grad_accum: int
    max_steps: int
    steps_per_epoch: int                   # optimizer steps of one epoch
    drop_last: bool
    num_workers: int
    eval_batch: int
    eval_interval_steps: int               # 0: no curve
    max_per_img: int
    lr: float
    weight_decay: float
    betas: Tuple[float, float]
    eps: float
    max_grad_norm: float
    warmup_steps: float                    # >= 1 steps, < 1 fraction of max_steps
    lr_scheduler_type: str                 # TrainingArguments.lr_scheduler_type
    precision: str                         # 'fp32' / 'bf16' / 'fp16'
    seed: int
    param_groups: List[dict]               # rtdetr_mm's regex rules
    model_kwargs: Dict[str, Any]           # RTDetrV2Config fields
    backbone_kwargs: Dict[str, Any]        # RTDetrResNetConfig fields
    pixel_mean: Tuple[float, ...]
    pixel_std: Tuple[float, ...]
    settings: List[Setting] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)


_MISSING = object()


def _get(cfg: Any, dotted: str, default: Any = None) -> Any:
    """``cfg.a.b.0.c`` for ``'a.b.0.c'``, or ``default`` where a part is absent."""
    node = cfg
    for part in dotted.split('.'):
        if isinstance(node, (list, tuple)):
            index = int(part)
            if index >= len(node):
                return default
            node = node[index]
        elif hasattr(node, 'get'):  # dict, mmengine ConfigDict or Config
            node = node.get(part, _MISSING)
            if node is _MISSING:
                return default
        else:
            return default
    return node


def _dataset_cfg(cfg: Any, split: str) -> dict:
    key = f'{split}_dataloader.dataset'
    dataset = _get(cfg, key)
    if dataset is None:
        raise BaselineError(f'{cfg.filename}: no {key} (the run reads the config\'s '
                            f'{split} split)')
    if 'ann_file' not in dataset:
        raise BaselineError(
            f'{cfg.filename}: {key} is a {dataset.get("type")!r} without ann_file; this tool '
            'reads one COCO-format dataset per split (no dataset wrappers)')
    return dataset


def hf_model_config(model_cfg: Any, classes: Sequence[str]) -> Tuple[dict, dict]:
    """The transformers ``RTDetrV2Config`` / ``RTDetrResNetConfig`` arguments of
    an rtdetr_mm ``model`` config (architecture and losses).

    Returns:
        tuple[dict, dict]: (RTDetrV2Config kwargs, RTDetrResNetConfig kwargs).

    Raises:
        BaselineError: an architecture transformers cannot express, naming
            the config key (``model.backbone.depth``, ``model.neck.depth_mult``
            ...).
    """
    backbone, neck, head = model_cfg['backbone'], model_cfg['neck'], model_cfg['bbox_head']
    depth = backbone.get('depth')
    if depth not in BACKBONES:
        raise BaselineError(f'model.backbone.depth={depth!r}: transformers builds PResNet '
                            f'depths {sorted(BACKBONES)} only')
    if neck.get('depth_mult', 1.0) != 1.0:
        raise BaselineError(f'model.neck.depth_mult={neck.get("depth_mult")!r}: transformers\' '
                            'encoder has 3 RepVGG blocks per CSP layer (depth_mult 1.0) only')
    points = head.get('num_points', (4, 4, 4))
    points = tuple(points) if isinstance(points, (list, tuple)) else (points, )
    if len(set(points)) != 1:
        raise BaselineError(f'model.bbox_head.num_points={points!r}: transformers takes one '
                            'number of sampling points for every level')
    levels = head.get('num_levels', 3)
    dn = head.get('dn_cfg') or {}
    loss_cls = head.get('loss_cls', {})
    loss_type = loss_cls.get('loss_type', 'vfl')
    if loss_type != 'vfl':
        raise BaselineError(f'model.bbox_head.loss_cls.loss_type={loss_type!r}: transformers\' '
                            "RT-DETRv2 loss is VFL only ('vfl')")
    kwargs = dict(
        num_labels=len(classes),
        freeze_backbone_batch_norms=bool(backbone.get('freeze_norm', True)),
        encoder_in_channels=list(neck['in_channels']),
        encoder_hidden_dim=neck.get('hidden_dim', 256),
        encoder_ffn_dim=neck.get('dim_feedforward', 1024),
        encoder_attention_heads=neck.get('num_heads', 8),
        encoder_layers=neck.get('num_encoder_layers', 1),
        encode_proj_layers=list(neck.get('use_encoder_idx', (2, ))),
        hidden_expansion=float(neck.get('expansion', 1.0)),
        d_model=head.get('hidden_dim', 256),
        decoder_in_channels=list(head.get('in_channels', (256, 256, 256))),
        decoder_ffn_dim=head.get('dim_feedforward', 1024),
        decoder_layers=head.get('num_layers', 6),
        decoder_attention_heads=head.get('num_heads', 8),
        num_queries=head.get('num_queries', 300),
        num_feature_levels=levels,
        decoder_n_levels=levels,
        decoder_n_points=points[0],
        decoder_method=head.get('cross_attn_method', 'default'),
        num_denoising=dn.get('num_denoising', 100),
        label_noise_ratio=dn.get('label_noise_ratio', 0.5),
        box_noise_scale=dn.get('box_noise_scale', 1.0),
        weight_loss_vfl=float(loss_cls.get('loss_weight', 1.0)),
        weight_loss_bbox=float(_get(head, 'loss_bbox.loss_weight', 5.0)),
        weight_loss_giou=float(_get(head, 'loss_iou.loss_weight', 2.0)),
    )
    # None: the VFL family's official values (rtdetr_mm and transformers alike)
    if loss_cls.get('alpha') is not None:
        kwargs['focal_loss_alpha'] = float(loss_cls['alpha'])
    if loss_cls.get('gamma') is not None:
        kwargs['focal_loss_gamma'] = float(loss_cls['gamma'])
    costs = _get(model_cfg, 'train_cfg.assigner.match_costs') or []
    for cost in costs:
        kind = str(cost.get('type', '')).split('.')[-1]
        if kind == 'FocalLossCost':
            kwargs.update(matcher_class_cost=float(cost.get('weight', 2.0)),
                          matcher_alpha=float(cost.get('alpha', 0.25)),
                          matcher_gamma=float(cost.get('gamma', 2.0)))
        elif kind == 'BBoxL1Cost':
            kwargs['matcher_bbox_cost'] = float(cost.get('weight', 5.0))
        elif kind == 'IoUCost':
            kwargs['matcher_giou_cost'] = float(cost.get('weight', 2.0))
    return kwargs, dict(BACKBONES[depth], out_features=['stage2', 'stage3', 'stage4'])


def _optimizer_steps(cfg: Any, num_train: int, batch: int, accum: int,
                     drop_last: bool) -> Tuple[int, int]:
    """(optimizer steps of the config's run, optimizer steps per epoch), one
    process, as RTDETRv2EpochBasedTrainLoop counts them."""
    iters = num_train // batch if drop_last else math.ceil(num_train / batch)
    if iters == 0:
        raise BaselineError(f'{cfg.filename}: train_dataloader.batch_size={batch} > the '
                            f'{num_train} training images with drop_last=True: no iteration')
    epochs = _get(cfg, 'train_cfg.max_epochs')
    if epochs is None:
        raise BaselineError(f'{cfg.filename}: no train_cfg.max_epochs; pass --max-steps')
    per_epoch = max(1, iters // accum)
    return iters * int(epochs) // accum, per_epoch


def make_plan(cfg: Any, num_train: int, knobs: Optional[Dict[str, Any]] = None,
              knobs_path: Optional[str] = None, max_steps: Optional[int] = None,
              seed: Optional[int] = None) -> Plan:
    """Every setting of the Trainer run: CONFIG first, then the knobs.

    Args:
        cfg (Config): The rtdetr_mm config (``image_size`` applied).
        num_train (int): Training images after the dataset's filter.
        knobs (dict, optional): Seed-script constants
            (``rtdetr_mm.converters.seed_script.read_constants``).
        knobs_path (str, optional): Their file, for messages.
        max_steps (int, optional): Optimizer steps instead of the config's.
        seed (int, optional): Instead of the config's ``randomness.seed``.
    """
    classes = tuple(_get(cfg, 'train_dataloader.dataset.metainfo.classes')
                    or cfg.get('classes') or ())
    if not classes:
        raise BaselineError(f'{cfg.filename}: no train_dataloader.dataset.metainfo.classes')
    image_size = cfg.get('image_size')
    if image_size is None:
        raise BaselineError(f'{cfg.filename}: no image_size (h, w): the input size of the run')
    image_size = tuple(int(v) for v in image_size)
    train_dl = cfg.train_dataloader
    batch = int(train_dl.batch_size)
    accum = int(_get(cfg, 'optim_wrapper.accumulative_counts', 1) or 1)
    drop_last = bool(train_dl.get('drop_last', False))
    config_steps, per_epoch = _optimizer_steps(cfg, num_train, batch, accum, drop_last)
    optimizer = cfg.optim_wrapper.optimizer
    warmup = cfg.param_scheduler[0] if cfg.get('param_scheduler') else {}
    warmup_ratio = warmup.get('warmup_ratio')
    clip = _get(cfg, 'optim_wrapper.clip_grad') or {}
    wrapper = str(_get(cfg, 'optim_wrapper.type', '')).split('.')[-1]
    dtype = _get(cfg, 'optim_wrapper.dtype')
    precision = ('bf16' if dtype == 'bfloat16' else 'fp16') if 'Amp' in wrapper else 'fp32'
    val_interval = _get(cfg, 'train_cfg.val_interval', 1)
    model_kwargs, backbone_kwargs = hf_model_config(cfg.model, classes)
    preprocessor = cfg.model.get('data_preprocessor') or {}
    plan = Plan(
        classes=classes, image_size=image_size, train_batch=batch, grad_accum=accum,
        max_steps=config_steps, steps_per_epoch=per_epoch, drop_last=drop_last,
        num_workers=int(train_dl.get('num_workers', 0)),
        eval_batch=int(_get(cfg, 'val_dataloader.batch_size', 1)),
        eval_interval_steps=max(1, round(float(val_interval) * per_epoch)),
        max_per_img=int(_get(cfg, 'model.test_cfg.max_per_img', model_kwargs['num_queries'])),
        lr=float(optimizer.lr), weight_decay=float(optimizer.get('weight_decay', 0.0)),
        betas=tuple(optimizer.get('betas', (0.9, 0.999))), eps=float(optimizer.get('eps', 1e-8)),
        max_grad_norm=float(clip.get('max_norm', 0.0)),
        warmup_steps=(float(warmup_ratio) if warmup_ratio is not None
                      else float(warmup.get('warmup_steps', 0))),
        lr_scheduler_type='constant_with_warmup', precision=precision,
        seed=int(seed if seed is not None else _get(cfg, 'randomness.seed', 0) or 0),
        param_groups=list(_get(cfg, 'optim_wrapper.paramwise_cfg.groups') or []),
        model_kwargs=model_kwargs, backbone_kwargs=backbone_kwargs,
        pixel_mean=tuple(preprocessor.get('mean', (0.0, 0.0, 0.0))),
        pixel_std=tuple(preprocessor.get('std', (255.0, 255.0, 255.0))))
    src = 'CONFIG '
    plan.settings += [
        Setting('classes', list(classes), src + 'train_dataloader.dataset.metainfo.classes'),
        Setting('image_processor.size (h, w)', list(image_size), src + 'image_size'),
        Setting('TrainingArguments.per_device_train_batch_size', batch,
                src + 'train_dataloader.batch_size'),
        Setting('TrainingArguments.gradient_accumulation_steps', accum,
                src + 'optim_wrapper.accumulative_counts'),
        Setting('TrainingArguments.dataloader_drop_last', drop_last,
                src + 'train_dataloader.drop_last'),
        Setting('TrainingArguments.max_steps', config_steps,
                src + f'train_cfg.max_epochs x {per_epoch} optimizer steps per epoch '
                f'({num_train} images)'),
        Setting('TrainingArguments.learning_rate', plan.lr, src + 'optim_wrapper.optimizer.lr'),
        Setting('TrainingArguments.weight_decay', plan.weight_decay,
                src + 'optim_wrapper.optimizer.weight_decay'),
        Setting('AdamW betas / eps', [*plan.betas, plan.eps], src + 'optim_wrapper.optimizer'),
        Setting('AdamW parameter groups', [dict(g) for g in plan.param_groups],
                src + 'optim_wrapper.paramwise_cfg.groups (matched on rtdetr_mm names)'),
        Setting('TrainingArguments.max_grad_norm', plan.max_grad_norm,
                src + 'optim_wrapper.clip_grad.max_norm'),
        Setting('TrainingArguments.warmup_steps', plan.warmup_steps,
                src + ('param_scheduler.0.warmup_ratio' if warmup_ratio is not None
                       else 'param_scheduler.0.warmup_steps')),
        Setting('TrainingArguments.lr_scheduler_type', 'constant_with_warmup',
                src + 'param_scheduler (linear warm-up, then constant)'),
        Setting('precision', precision, src + 'optim_wrapper.type / dtype'),
        Setting('TrainingArguments.per_device_eval_batch_size', plan.eval_batch,
                src + 'val_dataloader.batch_size'),
        Setting('mAP curve every N optimizer steps', plan.eval_interval_steps,
                src + 'train_cfg.val_interval (epochs)'),
        Setting('TrainingArguments.seed', plan.seed,
                'command line --seed' if seed is not None else src + 'randomness.seed'),
    ]
    plan.settings += [Setting(f'RTDetrV2Config.{k}', v, src + 'model')
                      for k, v in model_kwargs.items()]
    if knobs:
        _apply_knobs(plan, knobs, knobs_path or 'the knobs script')
    if max_steps is not None:
        plan.max_steps = int(max_steps)
        plan.settings.append(Setting('TrainingArguments.max_steps', plan.max_steps,
                                     'command line --max-steps'))
    if _get(cfg, 'default_hooks.ema'):
        plan.notes.append('CONFIG trains with an EMA of the weights (default_hooks.ema); '
                          "transformers' Trainer has none: the raw weights are evaluated")
    if _get(cfg, 'model.data_preprocessor.batch_augments'):
        plan.notes.append('CONFIG trains multi-scale (model.data_preprocessor.batch_augments); '
                          'the Trainer run trains at image_size only')
    freeze_at = _get(cfg, 'model.backbone.freeze_at', -1)
    if freeze_at is not None and freeze_at >= 0:
        plan.notes.append(f'CONFIG freezes the backbone stem (model.backbone.freeze_at='
                          f'{freeze_at}); transformers trains it')
    label_smoothing = _get(cfg, 'model.bbox_head.loss_cls.label_smoothing', 0.0)
    if not knobs and label_smoothing:
        plan.notes.append(f'model.bbox_head.loss_cls.label_smoothing={label_smoothing}: '
                          'transformers has no label smoothing; not applied')
    eos = _get(cfg, 'model.bbox_head.loss_cls.eos_coef', 1.0)
    if not knobs and eos != 1.0:
        plan.notes.append(f'model.bbox_head.loss_cls.eos_coef={eos}: transformers\' VFL has '
                          'no no-object weight (its eos_coefficient acts in no RT-DETR loss); '
                          'not applied')
    return plan


def _apply_knobs(plan: Plan, knobs: Dict[str, Any], path: str) -> None:
    """Override the plan with the seed-script constants the Trainer expresses;
    record the others (CONFIG decides / inert, as in the script)."""
    if knobs.get('USE_FP16') and knobs.get('USE_BF16'):
        raise BaselineError(f'{path}: USE_FP16=True and USE_BF16=True: choose one precision')
    for name, value in knobs.items():
        if name not in KNOBS:
            continue
        kind, target = KNOBS[name]
        src = f'knob {name} ({osp.basename(path)})'
        if kind == 'args':
            if name == 'LEARNING_RATE':
                plan.lr = float(value)
            elif name == 'WEIGHT_DECAY':
                plan.weight_decay = float(value)
            elif name == 'WARMUP_RATIO':
                if value is None or not 0 <= float(value) < 1:
                    raise BaselineError(f'{path}: WARMUP_RATIO={value!r}: a fraction of the '
                                        'optimizer steps in [0, 1)')
                plan.warmup_steps = float(value)
            elif name in ('USE_FP16', 'USE_BF16'):
                if value:
                    plan.precision = 'fp16' if name == 'USE_FP16' else 'bf16'
                elif plan.precision == ('fp16' if name == 'USE_FP16' else 'bf16'):
                    plan.precision = 'fp32'
                target = 'precision'
                value = plan.precision
            elif name == 'VAL_BATCH':
                plan.eval_batch = int(value)
            elif name == 'EVAL_RATE_EPOCHS':
                if not isinstance(value, (int, float)) or value <= 0:
                    raise BaselineError(f'{path}: EVAL_RATE_EPOCHS={value!r}: a positive '
                                        'number of epochs')
                plan.eval_interval_steps = max(1, round(float(value) * plan.steps_per_epoch))
                target, value = 'mAP curve every N optimizer steps', plan.eval_interval_steps
            plan.settings.append(Setting(
                target if target.startswith(('precision', 'mAP')) else
                f'TrainingArguments.{target}', value, src))
        elif kind == 'model':
            plan.model_kwargs[target] = bool(value) if name == 'USE_FOCAL_LOSS' else float(value)
            plan.settings.append(Setting(f'RTDetrV2Config.{target}', plan.model_kwargs[target],
                                         src))
        elif kind == 'config':
            plan.settings.append(Setting(target, value, src + ': not applied, CONFIG decides '
                                         '(same data and budget for every compared run)'))
        else:  # inert in the script: transformers' default, as the script got
            plan.settings.append(Setting(target, value, src + ': had no effect in the '
                                         'transformers script; not applied here either'))
            if name in INERT_DEFAULTS:
                field, default = INERT_DEFAULTS[name]
                plan.model_kwargs[field] = default
    plan.lr_scheduler_type = TRAINER_DEFAULTS['lr_scheduler_type']
    plan.max_grad_norm = TRAINER_DEFAULTS['max_grad_norm']
    for key, value in TRAINER_DEFAULTS.items():
        plan.settings.append(Setting(f'TrainingArguments.{key}', value,
                                     "transformers' default (no knob sets it; as the "
                                     "script's Trainer)"))
    if 'BACKBONE_LR' in knobs:
        plan.notes.append(f'{path}: BACKBONE_LR={knobs["BACKBONE_LR"]!r}: the backbone lr is '
                          "CONFIG's (optim_wrapper.paramwise_cfg.groups lr_mult); pass the "
                          'config tools/misc/seed_to_config.py writes from this script to '
                          'carry it over')
    missing = sorted(set(KNOBS) - set(knobs))
    if missing:
        plan.notes.append(f'{path} has no {", ".join(missing)}: CONFIG\'s values are used')


# --------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------
def build_model(plan: Plan, init: Optional[str] = None):
    """transformers' RT-DETRv2 of the plan: its own initialisation after
    ``transformers.set_seed(plan.seed)``, or the weights of the Hugging Face
    directory ``init`` (whose architecture must be the config's)."""
    from transformers import (RTDetrResNetConfig, RTDetrV2Config, RTDetrV2ForObjectDetection,
                              set_seed)
    config = RTDetrV2Config(backbone_config=RTDetrResNetConfig(**plan.backbone_kwargs),
                            **plan.model_kwargs)
    config.id2label = dict(enumerate(plan.classes))
    config.label2id = {name: i for i, name in enumerate(plan.classes)}
    set_seed(plan.seed)
    if init is None:
        return RTDetrV2ForObjectDetection(config)
    if not osp.isdir(init):
        raise BaselineError(f'--init {init}: not a directory (a Hugging Face RT-DETRv2 '
                            'directory written by save_pretrained)')
    model = RTDetrV2ForObjectDetection(config)
    loaded = RTDetrV2ForObjectDetection.from_pretrained(init)
    mine, theirs = model.state_dict(), loaded.state_dict()
    bad = sorted(k for k in set(mine) | set(theirs)
                 if k not in mine or k not in theirs or mine[k].shape != theirs[k].shape)
    if bad:
        raise BaselineError(f'--init {init} does not fit the architecture of CONFIG: '
                            f'{len(bad)} keys missing, unexpected or of another shape, e.g. '
                            f'{bad[:5]}')
    model.load_state_dict(theirs)
    return model


def check_fits(hf_dir: str, cfg: Any) -> None:
    """rtdetr_mm's converter reads ``hf_dir`` (save_pretrained) and checks it
    against the config's model, as ``rtdetrv2_to_mmdet.py --config`` does:
    the transformers model has the config's architecture."""
    from rtdetr_mm.converters.rtdetrv2 import check_against_config, load_source
    from rtdetr_mm.models.detectors.architecture import infer_architecture
    state, _, _ = load_source(hf_dir)
    errors, _ = check_against_config(infer_architecture(state), cfg.model)
    if errors:
        raise BaselineError(f'the transformers model built from {cfg.filename} converts to '
                            'another architecture:\n  ' + '\n  '.join(errors))


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _param_groups(model: torch.nn.Module, plan: Plan) -> List[dict]:
    """The config's ``paramwise_cfg.groups`` (first matching regex wins, as
    RTDETRv2OptimWrapperConstructor) over rtdetr_mm's name of each trainable
    transformers parameter (the converter's key map)."""
    from rtdetr_mm.converters.keymap import map_key
    rules = [(re.compile(g['regex']), g) for g in plan.param_groups]
    groups = [dict(params=[], lr=plan.lr * g.get('lr_mult', 1.0),
                   weight_decay=plan.weight_decay * g.get('decay_mult', 1.0)) for _, g in rules]
    groups.append(dict(params=[], lr=plan.lr, weight_decay=plan.weight_decay))
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        ours = map_key(name) or name
        index = next((i for i, (rx, _) in enumerate(rules) if rx.search(ours)), len(rules))
        groups[index]['params'].append(param)
    return [g for g in groups if g['params']]


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------
def build_split(cfg: Any, split: str):
    """The config's ``<split>_dataloader.dataset`` built by mmdet with an empty
    pipeline (the same images and boxes tools/train.py and tools/test.py see)."""
    import copy
    import rtdetr_mm  # noqa: F401  (registers RTDETRv2CocoDataset)
    from mmdet.registry import DATASETS
    from mmengine.registry import init_default_scope
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    dataset_cfg = copy.deepcopy(_dataset_cfg(cfg, split))
    dataset_cfg['pipeline'] = []
    dataset = DATASETS.build(dataset_cfg)
    dataset.full_init()
    return dataset


def read_rgb(path: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB, EXIF orientation applied (as mmcv's loader)."""
    import cv2
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise BaselineError(f'{path}: cannot be read as an image')
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def make_processor(plan: Plan):
    """transformers' RT-DETR image processor at the plan's size (PIL backend:
    torchvision is not installed here)."""
    from transformers.models.rt_detr.image_processing_pil_rt_detr import \
        RTDetrImageProcessorPil
    h, w = plan.image_size
    identity = (all(m == 0 for m in plan.pixel_mean)
                and all(s == 255 for s in plan.pixel_std))
    return RTDetrImageProcessorPil(
        size=dict(height=h, width=w), do_resize=True, do_rescale=True,
        rescale_factor=1 / 255, do_normalize=not identity,
        image_mean=[m / 255 for m in plan.pixel_mean],
        image_std=[s / 255 for s in plan.pixel_std], do_pad=False,
        do_convert_annotations=True)


def make_augmentation():
    """The guide's training augmentation (:data:`AUGMENTATION`)."""
    os.environ.setdefault('NO_ALBUMENTATIONS_UPDATE', '1')  # no network check on import
    import albumentations as A
    return A.Compose(
        [A.Perspective(p=0.1), A.HorizontalFlip(p=0.5), A.RandomBrightnessContrast(p=0.5),
         A.HueSaturationValue(p=0.1)],
        bbox_params=A.BboxParams(format='coco', label_fields=['category'], clip=True,
                                 min_area=25))


class TrainSet(torch.utils.data.Dataset):
    """The config's training images with the guide's augmentation, as
    transformers' processor output (``pixel_values`` (3, h, w), ``labels``
    dict with ``class_labels`` and ``boxes`` cxcywh in [0, 1])."""

    def __init__(self, dataset, processor, augment) -> None:
        self.items = [dataset.get_data_info(i) for i in range(len(dataset))]
        self.processor = processor
        self.augment = augment

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        info = self.items[index]
        image = read_rgb(info['img_path'])
        boxes, labels = [], []
        for instance in info.get('instances', []):
            if instance.get('ignore_flag', 0):
                continue  # crowd boxes: ignored, as in rtdetr_mm's training
            x1, y1, x2, y2 = instance['bbox']
            boxes.append([x1, y1, x2 - x1, y2 - y1])
            labels.append(int(instance['bbox_label']))
        out = self.augment(image=image, bboxes=np.array(boxes, np.float32).reshape(-1, 4),
                           category=labels)
        annotations = [dict(image_id=info['img_id'], category_id=int(c), bbox=list(map(float, b)),
                            area=float(b[2] * b[3]), iscrowd=0)
                       for c, b in zip(out['category'], out['bboxes'])]
        encoded = self.processor(images=out['image'],
                                 annotations=dict(image_id=info['img_id'],
                                                  annotations=annotations),
                                 return_tensors='pt')
        return dict(pixel_values=encoded['pixel_values'][0], labels=encoded['labels'][0])


def collate(batch: List[dict]) -> dict:
    return dict(pixel_values=torch.stack([b['pixel_values'] for b in batch]),
                labels=[b['labels'] for b in batch])


# --------------------------------------------------------------------------
# Evaluation: the config's CocoMetric on transformers' detections
# --------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model, processor, cfg: Any, dataset, plan: Plan, split: str) -> Dict[str, float]:
    """COCO bbox metrics of ``model`` on ``dataset`` (``split``: 'val' or
    'test') with the config's ``<split>_evaluator`` (mmdet's CocoMetric, as
    tools/train.py / tools/test.py run it): transformers' post-processed
    detections (top ``max_per_img`` of sigmoid scores over queries x classes,
    boxes xyxy in original-image pixels) as mmdet ``pred_instances``."""
    import copy
    from mmengine.evaluator import Evaluator
    evaluator = Evaluator(copy.deepcopy(cfg.get(f'{split}_evaluator')))
    evaluator.dataset_meta = dataset.metainfo
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    use_focal = bool(model.config.use_focal_loss)
    for start in range(0, len(dataset), plan.eval_batch):
        infos = [dataset.get_data_info(i)
                 for i in range(start, min(start + plan.eval_batch, len(dataset)))]
        images = [read_rgb(info['img_path']) for info in infos]
        pixel_values = processor(images=images, return_tensors='pt')['pixel_values']
        outputs = model(pixel_values=pixel_values.to(device))
        sizes = [img.shape[:2] for img in images]
        results = processor.post_process_object_detection(
            outputs, threshold=-1.0, target_sizes=sizes, use_focal_loss=use_focal)
        samples = []
        for info, size, result in zip(infos, sizes, results):
            keep = slice(0, plan.max_per_img)  # top-k over queries x classes: sorted
            samples.append(dict(img_id=info['img_id'], ori_shape=tuple(size),
                                pred_instances=dict(bboxes=result['boxes'][keep].float().cpu(),
                                                    scores=result['scores'][keep].float().cpu(),
                                                    labels=result['labels'][keep].cpu())))
        evaluator.process(samples)
    metrics = evaluator.evaluate(len(dataset))
    model.train(was_training)
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}


# --------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------
def _trainer_callback(model, processor, cfg, val_set, plan, curve, clock):
    """A TrainerCallback: the config's COCO evaluation every
    ``plan.eval_interval_steps`` optimizer steps (before the last, which the
    final evaluation covers); its time is kept out of the training time."""
    from transformers import TrainerCallback

    class CocoCurve(TrainerCallback):

        def on_step_end(self, args, state, control, **kwargs):
            step = state.global_step
            if step % plan.eval_interval_steps or step >= plan.max_steps:
                return control
            start = time.perf_counter()
            metrics = evaluate(model, processor, cfg, val_set, plan, 'val')
            curve.append(dict(step=step, epoch=step / plan.steps_per_epoch,
                              **{k: metrics.get(k) for k in METRIC_KEYS}))
            clock['eval_s'] += time.perf_counter() - start
            return control

    return CocoCurve()


def run(cfg: Any, work_dir: str, knobs: Optional[Dict[str, Any]] = None,
        knobs_path: Optional[str] = None, max_steps: Optional[int] = None,
        init: Optional[str] = None, seed: Optional[int] = None,
        name: Optional[str] = None, log=print) -> dict:
    """Train and evaluate; write ``work_dir/hf_trainer_result.json`` (and the
    initial and the trained model, ``init_hf/`` and ``final_hf/``).

    Returns:
        dict: the result written (see :func:`result_record`).
    """
    require_extras()
    from transformers import Trainer, TrainingArguments
    os.makedirs(work_dir, exist_ok=True)
    train_data = build_split(cfg, 'train')
    plan = make_plan(cfg, len(train_data), knobs, knobs_path, max_steps, seed)
    for setting in plan.settings:
        log(f'[hf-baseline] {setting.target} = {setting.value!r}  <- {setting.source}')
    for note in plan.notes:
        log(f'[hf-baseline] note: {note}')
    if plan.precision == 'fp16' and not torch.cuda.is_available():
        raise BaselineError('fp16 (USE_FP16 / optim_wrapper.dtype=float16): transformers\' '
                            'Trainer runs fp16 with loss scaling on a GPU only; on CPU use '
                            'bf16 or fp32')

    model = build_model(plan, init)
    init_dir = osp.join(work_dir, 'init_hf')
    model.save_pretrained(init_dir)  # the arms that share these weights convert this dir
    check_fits(init_dir, cfg)
    processor = make_processor(plan)
    train_set = TrainSet(train_data, processor, make_augmentation())
    val_set = build_split(cfg, 'val')
    test_set = build_split(cfg, 'test')

    with _one_process():
        args = TrainingArguments(
            output_dir=osp.join(work_dir, 'trainer'), max_steps=plan.max_steps,
            per_device_train_batch_size=plan.train_batch,
            gradient_accumulation_steps=plan.grad_accum, learning_rate=plan.lr,
            weight_decay=plan.weight_decay, adam_beta1=plan.betas[0], adam_beta2=plan.betas[1],
            adam_epsilon=plan.eps, max_grad_norm=plan.max_grad_norm,
            warmup_steps=plan.warmup_steps, lr_scheduler_type=plan.lr_scheduler_type,
            bf16=plan.precision == 'bf16', fp16=plan.precision == 'fp16',
            dataloader_drop_last=plan.drop_last, dataloader_num_workers=plan.num_workers,
            remove_unused_columns=False, save_strategy='no', eval_strategy='no',
            report_to='none', logging_steps=max(1, min(50, plan.max_steps // 10)),
            disable_tqdm=True, seed=plan.seed, use_cpu=not torch.cuda.is_available())
        optimizer = torch.optim.AdamW(_param_groups(model, plan), lr=plan.lr, betas=plan.betas,
                                      eps=plan.eps, weight_decay=plan.weight_decay)
        curve: List[dict] = []
        clock = dict(eval_s=0.0)
        trainer = Trainer(model=model, args=args, train_dataset=train_set, data_collator=collate,
                          optimizers=(optimizer, None),
                          callbacks=[_trainer_callback(model, processor, cfg, val_set, plan,
                                                       curve, clock)])
        output = trainer.train()
    train_time = float(output.metrics['train_runtime']) - clock['eval_s']
    model.save_pretrained(osp.join(work_dir, 'final_hf'))
    metrics = evaluate(model, processor, cfg, test_set, plan, 'test')
    if _same_split(cfg):
        curve.append(dict(step=plan.max_steps, epoch=plan.max_steps / plan.steps_per_epoch,
                          **{k: metrics.get(k) for k in METRIC_KEYS}))
    record = result_record(cfg, plan, name, model, metrics, curve, train_time,
                           int(output.global_step), init, knobs_path)
    path = osp.join(work_dir, RESULT_FILE)
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(record, f, indent=1)
    os.replace(tmp, path)
    log(f'[hf-baseline] result: {path}')
    return record


def _same_split(cfg: Any) -> bool:
    val, test = _dataset_cfg(cfg, 'val'), _dataset_cfg(cfg, 'test')
    keys = ('data_root', 'ann_file', 'data_prefix')
    return all(val.get(k) == test.get(k) for k in keys)


def result_record(cfg: Any, plan: Plan, name: Optional[str], model, metrics: Dict[str, float],
                  curve: List[dict], train_time: float, steps: int, init: Optional[str],
                  knobs_path: Optional[str]) -> dict:
    """The result file's content (``format`` :data:`RESULT_FORMAT`), read by
    ``tools/analysis_tools/compare.py --results``:

    * ``name``, ``config``, ``input`` ('HxW'), ``params`` (all parameters);
    * ``train_time_s``: training wall time without the curve's evaluations;
      ``train_steps`` optimizer steps of ``images_per_step`` images;
      ``images_per_s`` = steps x images_per_step / train_time_s;
    * ``metrics``: the config's test evaluator (``coco/bbox_mAP`` ...);
    * ``curve``: [{step, epoch, coco/bbox_mAP ...}] on the val split;
    * ``init``: the ``--init`` directory or null (transformers' init, seeded);
    * ``settings`` / ``notes`` / ``augmentation``: what the run did and why.
    """
    import transformers
    images_per_step = plan.train_batch * plan.grad_accum
    h, w = plan.image_size
    return dict(
        format=RESULT_FORMAT,
        name=name or f'transformers Trainer ({osp.splitext(osp.basename(cfg.filename))[0]})',
        config=osp.abspath(cfg.filename), input=f'{h}x{w}', params=count_params(model),
        train_time_s=train_time, train_steps=steps, images_per_step=images_per_step,
        images_per_s=steps * images_per_step / train_time if train_time > 0 else None,
        metrics={k: metrics.get(k) for k in METRIC_KEYS}, all_metrics=metrics, curve=curve,
        init=osp.abspath(init) if init else None, seed=plan.seed,
        knobs=osp.abspath(knobs_path) if knobs_path else None,
        settings=[asdict(s) for s in plan.settings], notes=plan.notes,
        augmentation=AUGMENTATION, precision=plan.precision,
        versions=dict(transformers=transformers.__version__, torch=torch.__version__,
                      threads=torch.get_num_threads()))


@contextlib.contextmanager
def _one_process():
    """Hide ``LOCAL_RANK`` from accelerate while the Trainer runs, unless
    ``WORLD_SIZE`` says several processes were launched.

    NOTE: mmdet's tools (ours too) export ``LOCAL_RANK=0`` for a single
    process, and accelerate takes any ``LOCAL_RANK`` for a distributed launch
    (``env://`` rendezvous without ``MASTER_ADDR``). The baseline is one
    process.
    """
    saved = os.environ.get('LOCAL_RANK')
    if os.environ.get('WORLD_SIZE', '1') == '1':
        os.environ.pop('LOCAL_RANK', None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ['LOCAL_RANK'] = saved
