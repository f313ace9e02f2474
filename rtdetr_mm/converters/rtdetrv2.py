"""Convert RT-DETRv2 weights (Hugging Face, official, ImageNet PResNet) to
rtdetr_mm checkpoints that ``load_from``, ``tools/test.py`` and
``mmdet.apis.init_detector`` accept.

Our module names follow the official code, so:

- official ``backbone.* / encoder.* / decoder.*`` -> ``backbone.* / neck.* /
  bbox_head.*`` (prefix swap only);
- Hugging Face keys go through the regex rules of :mod:`.keymap`;
- an ImageNet PResNet checkpoint is already in backbone naming.
"""
import json
import os
import os.path as osp
import warnings
from dataclasses import asdict
from typing import Dict, List, Optional, Tuple

import torch

from ..engine.checkpoint_safety import safe_load_checkpoint
from ..models.dense_heads import CLASS_DEPENDENT_LAYERS
# the architecture is read off the state dict as the checkpoint fit check does
from ..models.detectors.architecture import (Architecture, differs,  # noqa: F401
                                             infer_architecture)

# Buffers the official code stores but our model regenerates for any input size.
DROPPED_KEYS = ('decoder.anchors', 'decoder.valid_mask', 'model.anchors', 'model.valid_mask')

#: Hugging Face ``model_type`` this converter reads
SUPPORTED_MODEL_TYPE = 'rt_detr_v2'
#: what ``tools/model_converters/rtdetrv2_to_mmdet.py`` accepts, for messages
SUPPORTED = ("a Hugging Face RT-DETRv2 directory (config.json with model_type "
             "'rt_detr_v2', RTDetrV2ForObjectDetection, + model.safetensors), an official "
             "lyuwenyu/RT-DETR RT-DETRv2 checkpoint, or an ImageNet PResNet-vd backbone")


class ConversionError(ValueError):
    """The source cannot be converted (names the file and the problem)."""


# ----------------------------------------------------------------- sources
def load_source(src: str) -> Tuple[Dict[str, torch.Tensor], str, Optional[dict]]:
    """Read a source checkpoint.

    Args:
        src (str): A Hugging Face model directory (``config.json`` +
            ``model.safetensors``), an official checkpoint
            (``{'ema': {'module': sd}}`` or ``{'model': sd}``), or an ImageNet
            PResNet-vd backbone checkpoint (a bare state dict).

    Returns:
        tuple: (state dict in OUR naming, kind in {'hf', 'official',
        'backbone'}, HF config dict or None).
    """
    if osp.isdir(src):
        return _load_hf_dir(src)
    if not osp.isfile(src):
        raise ConversionError(f'{src}: no such file or directory')
    if src.endswith('.safetensors'):
        raise ConversionError(f'{src}: pass the Hugging Face model directory (with config.json), '
                              'not the .safetensors file')
    ckpt = safe_load_checkpoint(src)
    if not isinstance(ckpt, dict):
        raise ConversionError(f'{src}: expected a dict checkpoint, got {type(ckpt).__name__}')
    if 'ema' in ckpt and isinstance(ckpt['ema'], dict) and 'module' in ckpt['ema']:
        return _from_official(ckpt['ema']['module'], src), 'official', None
    if 'model' in ckpt and isinstance(ckpt['model'], dict):
        return _from_official(ckpt['model'], src), 'official', None
    if 'state_dict' in ckpt:
        raise ConversionError(f'{src}: this already looks like an mmengine checkpoint '
                              "('state_dict' key); load it directly with load_from")
    tensors = {k: v for k, v in ckpt.items() if torch.is_tensor(v)}
    if any(k.startswith(('conv1.', 'res_layers.')) for k in tensors):
        return {k: v for k, v in tensors.items() if not k.startswith('fc.')}, 'backbone', None
    raise ConversionError(f'{src}: not an RT-DETRv2 checkpoint: no ema.module / model state dict '
                          f'and no PResNet keys (first keys: {list(ckpt)[:5]})')


def _from_official(sd: Dict[str, torch.Tensor], src: str) -> Dict[str, torch.Tensor]:
    if _official_v1(sd):
        raise ConversionError(
            f'{src}: an official RT-DETR v1 checkpoint (decoder.decoder.layers.*.cross_attn '
            'has no num_points_scale), which rtdetr_mm does not support: its decoder is not '
            f"RT-DETRv2's. Supported: {SUPPORTED}.")
    prefixes = {'backbone.': 'backbone.', 'encoder.': 'neck.', 'decoder.': 'bbox_head.'}
    out = {}
    for key, value in sd.items():
        if key in DROPPED_KEYS:
            continue
        for old, new in prefixes.items():
            if key.startswith(old):
                out[new + key[len(old):]] = value
                break
        else:
            raise ConversionError(f'{src}: unexpected key {key!r} in the official checkpoint')
    return out


def _load_hf_dir(src: str):
    from safetensors.torch import load_file

    from .keymap import convert_hf_state_dict
    cfg_path, weights = osp.join(src, 'config.json'), osp.join(src, 'model.safetensors')
    if not osp.isfile(cfg_path):
        raise ConversionError(f'{src}: missing config.json (expected a directory written by '
                              f'save_pretrained); supported: {SUPPORTED}')
    with open(cfg_path) as f:
        try:
            hf_cfg = json.load(f)
        except ValueError as err:
            raise ConversionError(f'{cfg_path}: not valid JSON ({err})') from None
    model_type = hf_cfg.get('model_type') if isinstance(hf_cfg, dict) else None
    if model_type != SUPPORTED_MODEL_TYPE:
        raise ConversionError(_unsupported_model_type(cfg_path, model_type, hf_cfg))
    if not osp.isfile(weights):
        raise ConversionError(f'{src}: missing model.safetensors (expected a directory '
                              'written by save_pretrained)')
    hf_sd = load_file(weights)  # safetensors: no pickle involved
    converted, unmapped = convert_hf_state_dict(hf_sd)
    if unmapped:
        raise ConversionError(f'{weights}: {len(unmapped)} keys have no rtdetr_mm name, '
                              f'e.g. {unmapped[:5]}')
    return converted, 'hf', hf_cfg


def _unsupported_model_type(cfg_path: str, model_type, hf_cfg) -> str:
    architectures = hf_cfg.get('architectures') if isinstance(hf_cfg, dict) else None
    found = f'model_type {model_type!r}'
    if isinstance(architectures, list) and architectures:
        found += f' ({", ".join(map(str, architectures))})'
    if model_type == 'rt_detr':
        what = ('this is RT-DETR v1 (RTDetrForObjectDetection), which rtdetr_mm does not '
                'support: its decoder and weights are not RT-DETRv2\'s (RTDETRv2Head)')
    elif model_type is None:
        what = 'config.json names no model_type'
    else:
        what = 'this is not an RT-DETRv2 model'
    return f'{cfg_path}: {found}: {what}. Supported: {SUPPORTED}.'


def _official_v1(sd: Dict[str, torch.Tensor]) -> bool:
    """An official RT-DETR **v1** state dict (``RTDETRTransformer``, in the
    v1 code and in rtdetrv2_pytorch): its deformable attention has no
    ``num_points_scale`` buffer, which every RT-DETRv2 decoder layer stores."""
    layers = [k for k in sd if k.startswith('decoder.decoder.layers.')
              and k.endswith('.cross_attn.sampling_offsets.weight')]
    return bool(layers) and not any(k.endswith('.cross_attn.num_points_scale') for k in sd)


# -------------------------------------------------------------- architecture
def check_against_config(arch: Architecture, model_cfg) -> Tuple[List[str], List[str]]:
    """Compare a source architecture with ``cfg.model``.

    Returns:
        tuple[list[str], list[str]]: (errors: the weights cannot be loaded
        into this config; warnings: e.g. a different number of classes).
    """
    backbone, neck, head = model_cfg['backbone'], model_cfg['neck'], model_cfg['bbox_head']
    enc_levels = tuple(neck.get('use_encoder_idx', (2,)))
    expected = {
        'backbone.depth': (arch.depth, backbone['depth']),
        'neck.in_channels': (arch.neck_in_channels, tuple(neck['in_channels'])),
        'neck.hidden_dim': (arch.hidden_dim, neck.get('hidden_dim', 256)),
        'neck.expansion': (arch.expansion, float(neck.get('expansion', 1.0))),
        'neck.depth_mult': (arch.depth_mult, float(neck.get('depth_mult', 1.0))),
        'neck.num_encoder_layers': (arch.num_encoder_layers, neck.get('num_encoder_layers', 1)),
        'neck.use_encoder_idx (count)': (len(arch.use_encoder_idx), len(enc_levels)),
        'neck.dim_feedforward': (arch.encoder_ffn_dim, neck.get('dim_feedforward', 1024)),
        'bbox_head.hidden_dim': (arch.decoder_hidden_dim, head.get('hidden_dim', 256)),
        'bbox_head.num_layers': (arch.num_layers, head['num_layers']),
        'bbox_head.num_levels': (arch.num_levels, head.get('num_levels', 3)),
        'bbox_head.num_points': (arch.num_points, _as_points(head.get('num_points', 4),
                                                             head.get('num_levels', 3))),
        'bbox_head.dim_feedforward': (arch.decoder_ffn_dim, head.get('dim_feedforward', 1024)),
    }
    errors = [f'{key}: checkpoint has {src!r}, config has {dst!r}'
              for key, (src, dst) in expected.items() if differs(src, dst)]
    warns = []
    if arch.num_classes != head['num_classes']:
        warns.append(f"checkpoint has {arch.num_classes} classes, config has "
                     f"{head['num_classes']}: these layers will be re-initialised: "
                     + ', '.join(f'bbox_head.{name}' for name in CLASS_DEPENDENT_LAYERS))
    return errors, warns


def _as_points(points, levels):
    return tuple(points) if not isinstance(points, int) else (points,) * levels


# ----------------------------------------------------------------- classes
def class_names_for(num_classes: int, hf_cfg: Optional[dict]) -> Tuple[List[str], bool]:
    """Class names from ``id2label`` (HF) or COCO's 80 names.

    Returns:
        tuple[list[str], bool]: names, and whether they are placeholders.
    """
    if hf_cfg and hf_cfg.get('id2label'):
        id2label = {int(k): v for k, v in hf_cfg['id2label'].items()}
        if sorted(id2label) == list(range(num_classes)):
            return [id2label[i] for i in range(num_classes)], False
    if num_classes == 80:
        from mmdet.datasets import CocoDataset
        return list(CocoDataset.METAINFO['classes']), False
    return [f'class_{i}' for i in range(num_classes)], True


def _add_batch_counters(state_dict: Dict[str, torch.Tensor]) -> None:
    """Give every BN without one a ``num_batches_tracked`` (frozen-BN sources
    lack it); it keeps trainable BNs free of missing-key warnings and is
    ignored by FrozenBatchNorm2d."""
    for key in [k for k in state_dict if k.endswith('.running_mean')]:
        counter = key[:-len('running_mean')] + 'num_batches_tracked'
        state_dict.setdefault(counter, torch.tensor(0, dtype=torch.long))


# ------------------------------------------------------------------ driver
def convert(src: str, dst: str, config: Optional[str] = None) -> dict:
    """Convert ``src`` and write an mmengine checkpoint to ``dst``.

    Returns:
        dict: summary with ``kind``, ``arch`` (dict or None), ``warnings``.
    """
    state_dict, kind, hf_cfg = load_source(src)
    _add_batch_counters(state_dict)
    warns: List[str] = []
    summary = dict(kind=kind, arch=None, warnings=warns)
    if kind == 'backbone':
        meta = dict(converted_from=osp.abspath(src), kind='backbone')
        if config is not None:
            warns.append('--config is ignored for a backbone-only checkpoint')
    else:
        arch = infer_architecture(state_dict)
        names, placeholder = class_names_for(arch.num_classes, hf_cfg)
        if placeholder:
            warns.append(f'{src}: no class names in the source; wrote placeholders class_0..')
        arch.class_names = names
        summary['arch'] = asdict(arch)
        if config is not None:
            from mmengine.config import Config
            errors, more = check_against_config(arch, Config.fromfile(config).model)
            warns.extend(more)
            if errors:
                raise ConversionError(
                    f'{src} does not fit {config}:\n  ' + '\n  '.join(errors))
        meta = dict(converted_from=osp.abspath(src), kind=kind,
                    dataset_meta=dict(classes=tuple(names)))
    for w in warns:
        warnings.warn(w)
    os.makedirs(osp.dirname(osp.abspath(dst)), exist_ok=True)
    tmp = dst + '.tmp'
    torch.save(dict(state_dict=state_dict, meta=meta), tmp)
    os.replace(tmp, dst)
    return summary
