"""The architecture of an RT-DETRv2 detector, read off a state dict (our
naming: ``backbone.* / neck.* / bbox_head.*``).

Used by the converter's ``--config`` check and by the checkpoint fit check
(:mod:`.checkpoint_fit`), which prints the facts of a checkpoint that does not
fit next to those of the model. Every fact is named by the config key it
corresponds to (``neck.hidden_dim``, ``bbox_head.num_layers`` ...).
"""
import re
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import torch

#: (basic or bottleneck blocks, blocks per stage) -> PResNet depth
DEPTHS = {(False, (2, 2, 2, 2)): 18, (False, (3, 4, 6, 3)): 34,
          (True, (3, 4, 6, 3)): 50, (True, (3, 4, 23, 3)): 101}


@dataclass
class Architecture:
    """Architecture read off a state dict (our naming).

    A fact the state dict does not hold (e.g. a backbone-only checkpoint has
    no neck) is ``None``; ``depth`` is -1 for a PResNet of no known depth.
    """
    depth: Optional[int]
    neck_in_channels: Optional[Tuple[int, ...]]
    hidden_dim: Optional[int]
    expansion: Optional[float]
    depth_mult: Optional[float]
    num_encoder_layers: Optional[int]
    use_encoder_idx: Optional[Tuple[int, ...]]
    encoder_ffn_dim: Optional[int]
    decoder_hidden_dim: Optional[int]
    num_layers: Optional[int]
    num_levels: Optional[int]
    num_points: Optional[Tuple[int, ...]]
    num_classes: Optional[int]
    decoder_ffn_dim: Optional[int]
    class_names: List[str] = field(default_factory=list)


#: Architecture field -> the config key it corresponds to (as the converter's
#: ``--config`` check and the fit check print it)
CONFIG_KEYS = {
    'depth': 'backbone.depth',
    'neck_in_channels': 'neck.in_channels',
    'hidden_dim': 'neck.hidden_dim',
    'expansion': 'neck.expansion',
    'depth_mult': 'neck.depth_mult',
    'num_encoder_layers': 'neck.num_encoder_layers',
    'use_encoder_idx': 'neck.use_encoder_idx (count)',
    'encoder_ffn_dim': 'neck.dim_feedforward',
    'decoder_hidden_dim': 'bbox_head.hidden_dim',
    'num_layers': 'bbox_head.num_layers',
    'num_levels': 'bbox_head.num_levels',
    'num_points': 'bbox_head.num_points',
    'decoder_ffn_dim': 'bbox_head.dim_feedforward',
    'num_classes': 'bbox_head.num_classes',
}


def _fact(compute: Callable[[], Any]) -> Any:
    """``compute()``, or None when the keys it reads are not there."""
    try:
        return compute()
    except (KeyError, IndexError, ZeroDivisionError, ValueError):
        return None


def infer_architecture(sd: Mapping[str, torch.Tensor]) -> Architecture:
    """Read the architecture off a detector state dict in our naming.

    Args:
        sd (Mapping[str, Tensor]): A full or partial state dict
            (``backbone.* / neck.* / bbox_head.*``).

    Returns:
        Architecture: the facts found; those the state dict lacks are None.
    """
    def count(pattern: str) -> int:
        rx = re.compile(pattern)
        return len({m.group(1) for k in sd for m in [rx.match(k)] if m})

    def shape(key: str, dim: int) -> int:
        return int(sd[key].shape[dim])

    stage_blocks = tuple(count(rf'backbone\.res_layers\.{s}\.blocks\.(\d+)\.') for s in range(4))
    bottleneck = any('.branch2c.' in k for k in sd)
    depth = DEPTHS.get((bottleneck, stage_blocks), -1) if any(stage_blocks) else None
    num_in = count(r'neck\.input_proj\.(\d+)\.')
    enc_levels = tuple(sorted({int(m.group(1)) for k in sd
                               for m in [re.match(r'neck\.encoder\.(\d+)\.', k)] if m}))
    has_neck = any(k.startswith('neck.') for k in sd)
    has_head = any(k.startswith('bbox_head.') for k in sd)
    hidden = _fact(lambda: shape('neck.input_proj.0.conv.weight', 0))
    csp_hidden = _fact(lambda: shape('neck.fpn_blocks.0.conv1.conv.weight', 0))
    num_classes = _fact(lambda: shape('bbox_head.dec_score_head.0.weight', 0))
    if num_classes is None:
        num_classes = _fact(lambda: shape('bbox_head.enc_score_head.weight', 0))
    return Architecture(
        depth=depth,
        neck_in_channels=_fact(lambda: tuple(
            shape(f'neck.input_proj.{i}.conv.weight', 1) for i in range(num_in))) or None,
        hidden_dim=hidden,
        expansion=_fact(lambda: csp_hidden / hidden),
        depth_mult=(count(r'neck\.fpn_blocks\.0\.bottlenecks\.(\d+)\.') / 3
                    if csp_hidden is not None else None),
        num_encoder_layers=count(r'neck\.encoder\.0\.layers\.(\d+)\.') if has_neck else None,
        use_encoder_idx=enc_levels if has_neck else None,  # neck.encoder.{j}: j-th used level
        encoder_ffn_dim=(_fact(lambda: shape('neck.encoder.0.layers.0.linear1.weight', 0))
                         if enc_levels else (0 if has_neck else None)),
        decoder_hidden_dim=_fact(lambda: shape('bbox_head.enc_output.proj.weight', 0)),
        num_layers=count(r'bbox_head\.decoder\.layers\.(\d+)\.') if has_head else None,
        num_levels=count(r'bbox_head\.input_proj\.(\d+)\.') if has_head else None,
        num_points=_fact(lambda: points_from_scale(
            sd['bbox_head.decoder.layers.0.cross_attn.num_points_scale'])),
        num_classes=num_classes,
        decoder_ffn_dim=_fact(lambda: shape('bbox_head.decoder.layers.0.linear1.weight', 0)))


def points_from_scale(scale: torch.Tensor) -> Tuple[int, ...]:
    """Invert ``num_points_scale = [1/n]*n per level`` (sampling points per
    level of the decoder's deformable attention)."""
    points, i = [], 0
    values = scale.tolist()
    while i < len(values):
        n = int(round(1.0 / values[i]))
        points.append(n)
        i += n
    return tuple(points)


def architecture_facts(arch: Architecture) -> Dict[str, Any]:
    """The facts of ``arch`` by config key (``neck.hidden_dim`` -> 256), in
    the order of :data:`CONFIG_KEYS`; ``use_encoder_idx`` as its count."""
    facts = {}
    for f in fields(arch):
        if f.name not in CONFIG_KEYS:
            continue
        value = getattr(arch, f.name)
        if f.name == 'use_encoder_idx' and value is not None:
            value = len(value)
        facts[CONFIG_KEYS[f.name]] = value
    return facts


def differs(a: Any, b: Any) -> bool:
    """Whether two architecture facts differ (floats to 1e-6, sequences as
    tuples, None differs from any value)."""
    if a is None or b is None:
        return a is not b
    if isinstance(a, float) or isinstance(b, float):
        return abs(float(a) - float(b)) > 1e-6
    return tuple(a) != tuple(b) if isinstance(a, (tuple, list)) else a != b
