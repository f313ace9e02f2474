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
import re
import warnings
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Tuple

import torch

from ..engine.checkpoint_safety import safe_load_checkpoint
from ..models.dense_heads import CLASS_DEPENDENT_LAYERS

# Buffers the official code stores but our model regenerates for any input size.
DROPPED_KEYS = ('decoder.anchors', 'decoder.valid_mask', 'model.anchors', 'model.valid_mask')


@dataclass
class Architecture:
    """Architecture read off a state dict (our naming)."""
    depth: int
    neck_in_channels: Tuple[int, ...]
    hidden_dim: int
    expansion: float
    depth_mult: float
    num_encoder_layers: int
    use_encoder_idx: Tuple[int, ...]
    encoder_ffn_dim: int
    decoder_hidden_dim: int
    num_layers: int
    num_levels: int
    num_points: Tuple[int, ...]
    num_classes: int
    decoder_ffn_dim: int
    class_names: List[str] = field(default_factory=list)


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
    for path in (cfg_path, weights):
        if not osp.isfile(path):
            raise ConversionError(f'{src}: missing {osp.basename(path)} (expected a directory '
                                  'written by save_pretrained)')
    with open(cfg_path) as f:
        hf_cfg = json.load(f)
    if hf_cfg.get('model_type') not in ('rt_detr_v2', 'rt_detr'):
        raise ConversionError(f"{cfg_path}: model_type is {hf_cfg.get('model_type')!r}, "
                              "expected 'rt_detr_v2'")
    hf_sd = load_file(weights)  # safetensors: no pickle involved
    converted, unmapped = convert_hf_state_dict(hf_sd)
    if unmapped:
        raise ConversionError(f'{weights}: {len(unmapped)} keys have no rtdetr_mm name, '
                              f'e.g. {unmapped[:5]}')
    return converted, 'hf', hf_cfg


# -------------------------------------------------------------- architecture
def infer_architecture(sd: Dict[str, torch.Tensor]) -> Architecture:
    """Read the architecture off a full-model state dict in our naming."""
    def count(pattern: str) -> int:
        rx = re.compile(pattern)
        return len({m.group(1) for k in sd for m in [rx.match(k)] if m})

    stage_blocks = [count(rf'backbone\.res_layers\.{s}\.blocks\.(\d+)\.') for s in range(4)]
    bottleneck = any('.branch2c.' in k for k in sd)
    depth_table = {(False, (2, 2, 2, 2)): 18, (False, (3, 4, 6, 3)): 34,
                   (True, (3, 4, 6, 3)): 50, (True, (3, 4, 23, 3)): 101}
    depth = depth_table.get((bottleneck, tuple(stage_blocks)), -1)
    num_in = count(r'neck\.input_proj\.(\d+)\.')
    neck_in = tuple(int(sd[f'neck.input_proj.{i}.conv.weight'].shape[1]) for i in range(num_in))
    hidden = int(sd['neck.input_proj.0.conv.weight'].shape[0])
    csp_hidden = int(sd['neck.fpn_blocks.0.conv1.conv.weight'].shape[0])
    enc_layers_idx = sorted({int(m.group(1)) for k in sd
                             for m in [re.match(r'neck\.encoder\.(\d+)\.', k)] if m})
    num_enc_layers = count(r'neck\.encoder\.0\.layers\.(\d+)\.')
    enc_ffn = int(sd['neck.encoder.0.layers.0.linear1.weight'].shape[0]) if enc_layers_idx else 0
    num_layers = count(r'bbox_head\.decoder\.layers\.(\d+)\.')
    scale = sd['bbox_head.decoder.layers.0.cross_attn.num_points_scale']
    num_points = _points_from_scale(scale)
    return Architecture(
        depth=depth, neck_in_channels=neck_in, hidden_dim=hidden,
        expansion=csp_hidden / hidden,
        depth_mult=count(r'neck\.fpn_blocks\.0\.bottlenecks\.(\d+)\.') / 3,
        num_encoder_layers=num_enc_layers,
        use_encoder_idx=tuple(enc_layers_idx),  # neck.encoder.{j} is the j-th used level
        encoder_ffn_dim=enc_ffn,
        decoder_hidden_dim=int(sd['bbox_head.enc_output.proj.weight'].shape[0]),
        num_layers=num_layers,
        num_levels=count(r'bbox_head\.input_proj\.(\d+)\.'),
        num_points=num_points,
        num_classes=int(sd['bbox_head.dec_score_head.0.weight'].shape[0]),
        decoder_ffn_dim=int(sd['bbox_head.decoder.layers.0.linear1.weight'].shape[0]))


def _points_from_scale(scale: torch.Tensor) -> Tuple[int, ...]:
    """Invert ``num_points_scale = [1/n]*n per level``."""
    points, i = [], 0
    values = scale.tolist()
    while i < len(values):
        n = int(round(1.0 / values[i]))
        points.append(n)
        i += n
    return tuple(points)


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
              for key, (src, dst) in expected.items() if _differs(src, dst)]
    warns = []
    if arch.num_classes != head['num_classes']:
        warns.append(f"checkpoint has {arch.num_classes} classes, config has "
                     f"{head['num_classes']}: these layers will be re-initialised: "
                     + ', '.join(f'bbox_head.{name}' for name in CLASS_DEPENDENT_LAYERS))
    return errors, warns


def _as_points(points, levels):
    return tuple(points) if not isinstance(points, int) else (points,) * levels


def _differs(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return abs(float(a) - float(b)) > 1e-6
    return tuple(a) != tuple(b) if isinstance(a, (tuple, list)) else a != b


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
