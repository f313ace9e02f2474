"""Check a checkpoint against the detector it is loaded into.

mmengine's ``load_state_dict`` (``load_from``, ``tools/test.py``, mmdet's
``init_detector`` and so ``DetInferencer`` / ``tools/demo.py`` / the ONNX
export) loads what fits and only logs the rest: a checkpoint of another
architecture leaves the neck and head at their random initialisation, with
exit 0. :func:`checkpoint_fit_pre_hook` is registered on the detector with
torch's public ``register_load_state_dict_pre_hook``, so it sees every load
into it, whatever tool does it (mmengine's and torch's ``load_state_dict``
both call ``_load_from_state_dict``, which runs the pre hooks with the whole
state dict at the detector's prefix). The detector's ``checkpoint_fit``
decides what is allowed:

* ``'fine_tune'`` (default): only the class-dependent layers of the head
  (``CLASS_DEPENDENT_LAYERS``) may differ, and only in the number of classes:
  they keep their initialisation, with a warning naming every such key and
  both shapes (training's ``RTDETRv2ClassMismatchHook`` does this earlier,
  so that the EMA model gets the same initialisation). Any other missing,
  unexpected or size-mismatched key raises :class:`CheckpointMismatchError`.
* ``'exact'``: the number of classes must agree too (``tools/test.py`` and
  the ONNX export set this: their metrics / graph would come from random
  class layers).
* ``'off'``: expert opt-out: nothing raises; the same report is logged as a
  warning and the weights that fit are loaded.

The report groups the differences by module (``backbone.res_layers``,
``neck.encoder``, ``bbox_head.decoder`` ...; counts and a few keys with both
shapes) and prints the architecture facts of the checkpoint that differ
from the model's (:mod:`.architecture`, as the converter's ``--config``
check does).

NOTE: ``num_batches_tracked`` is ignored both ways, as mmengine does: frozen
BNs have none and the converter adds them to every BN.
"""
import logging
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple

import torch
from mmengine.logging import print_log

from ..dense_heads import CLASS_DEPENDENT_LAYERS
from .architecture import architecture_facts, differs, infer_architecture

__all__ = ['CHECKPOINT_FIT_MODES', 'SOURCE_METADATA_KEY', 'CheckpointFit',
           'CheckpointMismatchError', 'checkpoint_fit_pre_hook', 'compare_state_dicts',
           'is_class_dependent', 'require_exact_fit']

CHECKPOINT_FIT_MODES = ('fine_tune', 'exact', 'off')

#: Key of the root entry of a state dict's ``_metadata`` under which our
#: checkpoint loaders (``rtdetr_mm.engine.checkpoint_loaders``) record the
#: file a state dict was read from, so that the report can name it whatever
#: tool loads it.
#: NOTE: torch's ``_metadata`` is the only part of a checkpoint that mmengine
#: hands on to ``_load_from_state_dict`` (as ``local_metadata``); modules
#: read only its ``version`` entry.
SOURCE_METADATA_KEY = 'rtdetr_mm_source'

#: How many keys each line of the report shows
EXAMPLES = 2

_CLASS_DEPENDENT = re.compile(
    rf'^bbox_head\.({"|".join(CLASS_DEPENDENT_LAYERS)})(\.\d+)?\.(weight|bias)$')
_DENOISING_EMBED = 'bbox_head.denoising_class_embed.weight'
_IGNORED = re.compile(r'(^|\.)num_batches_tracked$')

Shape = Tuple[int, ...]


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the detector it is loaded into (names the
    file, what differs, and the ``model.checkpoint_fit`` opt-out)."""


def is_class_dependent(name: str) -> bool:
    """Whether a detector key (no prefix) belongs to a class-dependent layer."""
    return bool(_CLASS_DEPENDENT.match(name))


def _classes(name: str, shape: Shape) -> int:
    """The number of classes a class-dependent tensor of ``shape`` encodes
    (the denoising embedding has one more row, the padding class)."""
    return shape[0] - 1 if name == _DENOISING_EMBED else shape[0]


@dataclass
class CheckpointFit:
    """How a checkpoint's state dict fits a detector's (keys without prefix).

    Attributes:
        missing (list[str]): Detector keys the checkpoint lacks.
        unexpected (list[str]): Checkpoint keys the detector lacks.
        mismatched (list[tuple[str, tuple, tuple]]): (key, checkpoint shape,
            detector shape) of every other size mismatch.
        class_changed (list[tuple[str, tuple, tuple]]): Class-dependent keys
            that differ only in the number of classes, consistently.
        checkpoint_classes (int, optional): The checkpoint's number of
            classes (None when it has no class layer).
        model_classes (int, optional): The detector's.
    """
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    mismatched: List[Tuple[str, Shape, Shape]] = field(default_factory=list)
    class_changed: List[Tuple[str, Shape, Shape]] = field(default_factory=list)
    checkpoint_classes: Optional[int] = None
    model_classes: Optional[int] = None

    @property
    def architecture_fits(self) -> bool:
        """No difference other than the number of classes."""
        return not (self.missing or self.unexpected or self.mismatched)


def _shape(value) -> Optional[Shape]:
    return tuple(value.shape) if torch.is_tensor(value) else None


def _num_classes(state: Mapping[str, torch.Tensor]) -> Optional[int]:
    for name in ('bbox_head.enc_score_head.weight', 'bbox_head.dec_score_head.0.weight',
                 _DENOISING_EMBED):
        shape = _shape(state.get(name))
        if shape:
            return _classes(name, shape)
    return None


def compare_state_dicts(model_state: Mapping[str, torch.Tensor],
                        checkpoint_state: Mapping[str, torch.Tensor]) -> CheckpointFit:
    """Compare a checkpoint's state dict with a detector's.

    Args:
        model_state (Mapping[str, Tensor]): ``detector.state_dict()``.
        checkpoint_state (Mapping[str, Tensor]): The checkpoint's, keys
            relative to the detector (no ``module.`` / prefix).

    Returns:
        CheckpointFit: the differences (``num_batches_tracked`` ignored).
    """
    fit = CheckpointFit(checkpoint_classes=_num_classes(checkpoint_state),
                        model_classes=_num_classes(model_state))
    class_candidates = []
    for name, value in model_state.items():
        if _IGNORED.search(name):
            continue
        if name not in checkpoint_state:
            fit.missing.append(name)
            continue
        ours, theirs = _shape(value), _shape(checkpoint_state[name])
        if ours == theirs:
            continue
        if (is_class_dependent(name) and ours and theirs and len(ours) == len(theirs)
                and ours[1:] == theirs[1:]):
            class_candidates.append((name, theirs, ours))
        else:
            fit.mismatched.append((name, theirs, ours))
    fit.unexpected = [name for name in checkpoint_state
                      if name not in model_state and not _IGNORED.search(name)]
    # only a consistent change of the class count is one: every candidate
    # encodes the checkpoint's count and the model's
    consistent = all(_classes(n, theirs) == fit.checkpoint_classes
                     and _classes(n, ours) == fit.model_classes
                     for n, theirs, ours in class_candidates)
    if consistent:
        fit.class_changed = class_candidates
    else:
        fit.mismatched.extend(class_candidates)
    return fit


# ----------------------------------------------------------------- report
def _group(name: str) -> str:
    """``neck.encoder.0.layers.0.linear1.weight`` -> ``neck.encoder``."""
    return '.'.join(name.split('.')[:2])


def _shape_text(shape: Optional[Shape]) -> str:
    return str(list(shape)) if shape is not None else '(not a tensor)'


def _grouped_lines(fit: CheckpointFit) -> List[str]:
    groups: Dict[str, Dict[str, List[str]]] = OrderedDict()

    def add(kind: str, name: str, text: str) -> None:
        groups.setdefault(_group(name), OrderedDict()).setdefault(kind, []).append(text)

    for name, theirs, ours in fit.mismatched:
        add('of another shape', name,
            f'{name}: checkpoint {_shape_text(theirs)}, model {_shape_text(ours)}')
    for name in fit.missing:
        add('missing from the checkpoint', name, name)
    for name in fit.unexpected:
        add('not in the model', name, name)
    lines = []
    for group, kinds in groups.items():
        parts = []
        for kind, items in kinds.items():
            more = f', +{len(items) - EXAMPLES} more' if len(items) > EXAMPLES else ''
            parts.append(f'{len(items)} {kind} (e.g. {"; ".join(items[:EXAMPLES])}{more})')
        lines.append(f'  {group}: ' + ', '.join(parts))
    return lines


def _architecture_lines(checkpoint_state: Mapping[str, torch.Tensor],
                        model_state: Mapping[str, torch.Tensor]) -> List[str]:
    theirs = architecture_facts(infer_architecture(checkpoint_state))
    ours = architecture_facts(infer_architecture(model_state))
    changed = [f'  {key}: checkpoint {theirs[key]!r}, model {ours[key]!r}'
               for key in ours if key != 'bbox_head.num_classes'
               and differs(theirs[key], ours[key])]
    if changed:
        return ["The checkpoint's architecture differs from the model's (config keys):"] + changed
    known = ', '.join(f'{key}={value!r}' for key, value in theirs.items() if value is not None)
    return [f"The checkpoint's architecture: {known or 'not an RT-DETRv2 detector'}"]


def _classes_text(fit: CheckpointFit, source: str) -> str:
    return (f'{source} has {fit.checkpoint_classes} classes, the model '
            f'{fit.model_classes} (model.bbox_head.num_classes={fit.model_classes})')


def mismatch_report(fit: CheckpointFit, checkpoint_state: Mapping[str, torch.Tensor],
                    model_state: Mapping[str, torch.Tensor], source: str, mode: str) -> str:
    """The message for a checkpoint whose architecture does not fit."""
    count = len(fit.missing) + len(fit.unexpected) + len(fit.mismatched)
    head = (f'{source} does not fit the model (model.checkpoint_fit={mode!r}): {count} keys '
            'differ beyond the number of classes; a model loaded from it would keep '
            'random weights there:')
    lines = [head] + _grouped_lines(fit)
    if None not in (fit.checkpoint_classes, fit.model_classes) \
            and fit.checkpoint_classes != fit.model_classes:
        lines.append(f'  and {_classes_text(fit, "the checkpoint")}')
    shared = set(checkpoint_state) & set(model_state)
    if not shared:
        lines.append('The checkpoint shares no key with the model: it is not an rtdetr_mm '
                     'RT-DETRv2 detector checkpoint. Convert official or Hugging Face weights '
                     'with tools/model_converters/rtdetrv2_to_mmdet.py SRC DST --config CONFIG; '
                     'load a backbone-only checkpoint with model.backbone.init_cfg='
                     "dict(type='Pretrained', checkpoint=...).")
    else:
        lines.extend(_architecture_lines(checkpoint_state, model_state))
    lines.append('Use the config the checkpoint was trained with (or fix the config keys '
                 'above), or set model.checkpoint_fit=off (--cfg-options '
                 'model.checkpoint_fit=off) to load only the weights that fit and keep the '
                 'rest at their initialisation.')
    return '\n'.join(lines)


def class_count_report(fit: CheckpointFit, source: str) -> str:
    """The message for a checkpoint of another number of classes where the
    count must agree (``checkpoint_fit='exact'``)."""
    layers = ', '.join(f'bbox_head.{name}' for name in CLASS_DEPENDENT_LAYERS)
    return (f'{_classes_text(fit, source)}. The class layers ({layers}) would keep '
            'their random initialisation, so detections, metrics and exported graphs would '
            'be meaningless. Use the config the checkpoint was trained with '
            f'(model.bbox_head.num_classes={fit.checkpoint_classes}), or fine-tune it on '
            'your classes first (tools/train.py with load_from).')


def class_change_message(fit: CheckpointFit, source: str) -> str:
    """The warning for class-dependent layers kept at their initialisation."""
    listing = ', '.join(f'{name} {list(theirs)} -> {list(ours)}'
                        for name, theirs, ours in fit.class_changed)
    return (f'{_classes_text(fit, source)}: re-initialised {len(fit.class_changed)} '
            f'class-dependent parameters (kept at their initialisation, not loaded): '
            f'{listing}. Every other weight is loaded from the checkpoint.')


# ------------------------------------------------------------------- hook
def checkpoint_fit_pre_hook(module: torch.nn.Module, state_dict: dict, prefix: str,
                            local_metadata: dict, strict: bool, missing_keys: List[str],
                            unexpected_keys: List[str], error_msgs: List[str]) -> None:
    """``register_load_state_dict_pre_hook`` of the detector: check the
    state dict about to be loaded (see the module docstring).

    Class-dependent tensors that differ only in the number of classes are
    replaced in ``state_dict`` (the copy torch / mmengine loads from) by the
    layers' own values, so those layers keep their initialisation, unless
    ``module.checkpoint_fit`` is ``'exact'``.

    Raises:
        CheckpointMismatchError: the checkpoint does not fit (and
            ``module.checkpoint_fit`` is not ``'off'``).
    """
    mode = getattr(module, 'checkpoint_fit', 'fine_tune')
    source = local_metadata.get(SOURCE_METADATA_KEY) or 'the checkpoint'
    checkpoint_state = {key[len(prefix):]: value for key, value in state_dict.items()
                        if key.startswith(prefix)}
    model_state = module.state_dict()
    fit = compare_state_dicts(model_state, checkpoint_state)
    if not fit.architecture_fits:
        message = mismatch_report(fit, checkpoint_state, model_state, source, mode)
        if mode != 'off':
            raise CheckpointMismatchError(message)
        print_log(message, logger='current', level=logging.WARNING)
    if fit.class_changed:
        if mode == 'exact':
            raise CheckpointMismatchError(class_count_report(fit, source))
        for name, _, _ in fit.class_changed:
            # the layer's own value: it keeps its initialisation, and no
            # "missing key" follows from mmengine
            state_dict[prefix + name] = model_state[name].detach().clone()
        print_log(class_change_message(fit, source), logger='current', level=logging.WARNING)


def require_exact_fit(model_cfg: dict) -> None:
    """Set ``checkpoint_fit='exact'`` in an RT-DETRv2 model config (in
    place), for tools whose results would come from random class layers
    (``tools/test.py``, the ONNX export). An explicit ``'off'`` (expert
    opt-out) is kept; other detectors' configs are left alone.

    Args:
        model_cfg (dict): ``cfg.model`` (before any TTA wrapping).
    """
    model_type = model_cfg.get('type')
    name = model_type if isinstance(model_type, str) else getattr(model_type, '__name__', '')
    if name.split('.')[-1] == 'RTDETRv2' and model_cfg.get('checkpoint_fit') != 'off':
        model_cfg['checkpoint_fit'] = 'exact'
