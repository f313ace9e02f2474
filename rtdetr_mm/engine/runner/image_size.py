"""The IMAGE_SIZE knob: one top-level config key, applied when the run starts.

mmengine evaluates a base config once: a pipeline written in the base
dataset config as ``dict(type='Resize', scale=image_size)`` keeps the base's
value even when a child config or ``--cfg-options image_size=...`` changes
``image_size``. :func:`apply_image_size` (called by ``RTDETRv2Runner`` before
anything is built) writes the final ``cfg.image_size`` into every ``Resize``
step (nested ones too, e.g. inside ``RandomChoice``) of the train / val /
test pipelines (dataset wrappers included) and of the
``RTDETRv2AugSwitchHook.switch_pipeline``.

What follows the size without this function:
- the multi-scale range: ``RTDETRv2BatchResize(scale_ratios=...)`` draws sizes
  relative to the batch it receives (which has the pipeline's size);
- the decoder's anchors and the encoder's position embedding: both are cached
  per feature-map shape, so a new size makes new ones.
"""
import copy
from typing import List, Optional, Sequence, Tuple

from mmengine.config import Config

from rtdetr_mm.datasets.walk import (loader_datasets, resize_steps, walk_datasets,
                                     walk_transforms)

#: Largest feature stride of RT-DETRv2: sizes must be multiples of it.
SIZE_DIVISOR = 32


def check_image_size(image_size, key: str = 'image_size') -> Tuple[int, int]:
    """Validate ``image_size`` and return it as ``(height, width)``.

    Args:
        image_size (int | Sequence[int]): A square side or (height, width)
            in pixels, each a positive multiple of 32.
        key (str): Config key named in the error.

    Raises:
        ValueError: naming ``key``, the value and the nearest valid sizes.
    """
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        size = (image_size, image_size)
    elif isinstance(image_size, Sequence) and not isinstance(image_size, str) \
            and len(image_size) == 2 and all(isinstance(v, int) for v in image_size):
        size = (int(image_size[0]), int(image_size[1]))
    else:
        raise ValueError(f'{key} must be an int or a (height, width) pair of ints, '
                         f'got {image_size!r}')
    bad = list(dict.fromkeys(v for v in size if v <= 0 or v % SIZE_DIVISOR))  # once each
    if bad:
        hints = ', '.join(f'{v} -> {_nearest(v)}' for v in bad)
        raise ValueError(
            f'{key}={image_size!r}: every side must be a positive multiple of '
            f'{SIZE_DIVISOR} (the largest feature stride of RT-DETRv2); nearest valid: {hints}')
    return size


def _nearest(value: int) -> str:
    lower = max(SIZE_DIVISOR, value // SIZE_DIVISOR * SIZE_DIVISOR)
    upper = lower + SIZE_DIVISOR if lower < value else lower
    return str(lower) if lower == upper else f'{lower} or {upper}'


def _pipelines(cfg: Config) -> List[Tuple[str, list]]:
    """(config path, pipeline) of every dataset of the train / val / test
    loaders (wrappers included) and of the aug-switch hook."""
    found = [(f'{node.key}.pipeline', node.dataset['pipeline'])
             for split, dataset in loader_datasets(cfg)
             for node in walk_datasets(dataset, f'{split}_dataloader.dataset')
             if isinstance(node.dataset.get('pipeline'), list)]
    hooks = [(f'default_hooks.{name}', hook)
             for name, hook in (cfg.get('default_hooks') or {}).items()]
    hooks += [(f'custom_hooks.{i}', hook) for i, hook in enumerate(cfg.get('custom_hooks') or [])]
    for where, hook in hooks:
        if isinstance(hook, dict) and isinstance(hook.get('switch_pipeline'), list) and \
                hook.get('type') in ('RTDETRv2AugSwitchHook', 'mmdet.RTDETRv2AugSwitchHook'):
            found.append((f'{where}.switch_pipeline', hook['switch_pipeline']))
    return found


def _packs_inputs(pipeline: list, where: str) -> bool:
    """Whether ``pipeline`` has a ``Pack...Inputs`` step (``PackDetInputs``:
    what makes the model's inputs), at any depth."""
    for _, step in walk_transforms(pipeline, where):
        kind = step.get('type') if isinstance(step, dict) else None
        name = kind if isinstance(kind, str) else getattr(kind, '__name__', '')
        name = name.split('.')[-1]
        if name.startswith('Pack') and name.endswith('Inputs'):
            return True
    return False


def apply_image_size(cfg: Config) -> Optional[Tuple[int, int]]:
    """Write ``cfg.image_size`` into the ``scale`` of every ``Resize`` step.

    ``image_size`` unset or None leaves the config alone. ``Resize`` takes
    ``scale`` as (width, height); ``image_size`` is (height, width) like
    every shape in mmdet's data samples.

    Returns:
        tuple[int, int] | None: the applied (height, width).

    Raises:
        ValueError: invalid ``image_size`` (see :func:`check_image_size`), or
            a train/val/test pipeline without a ``Resize`` step to apply it to
            (a pipeline that packs no model input, e.g. loading steps only,
            is left alone).
    """
    if cfg.get('image_size') is None:
        return None
    height, width = check_image_size(cfg.image_size)
    for where, pipeline in _pipelines(cfg):
        steps = resize_steps(pipeline, where)
        if not steps and not _packs_inputs(pipeline, where):
            # NOTE: a pipeline that packs no model input feeds no model: mmdet's
            # analyze_results.py reads the ground truth through the loading
            # steps of the train pipeline alone (get_loading_pipeline)
            continue
        if not steps:
            raise ValueError(f'image_size={cfg.image_size!r} is set but {where} has no Resize '
                             'step to apply it to; add one or set image_size=None')
        for _, step in steps:
            step['scale'] = (width, height)
    return height, width


def resolved_copy(cfg: Config) -> Config:
    """A deep copy of ``cfg`` with :func:`apply_image_size` applied."""
    cfg = copy.deepcopy(cfg)
    apply_image_size(cfg)
    return cfg
