"""Fine-tuning from a checkpoint with another number of classes."""
import re
from typing import Dict, List, Tuple, Union

import torch
from mmdet.registry import HOOKS
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

from ...models.dense_heads import CLASS_DEPENDENT_LAYERS

#: parameters whose first dimension is the number of classes (+1 for the
#: denoising embedding's padding row), relative to the model
CLASS_DEPENDENT = re.compile(
    rf'^bbox_head\.({"|".join(CLASS_DEPENDENT_LAYERS)})(\.\d+)?\.(weight|bias)$')

#: ``Runner.load_checkpoint``'s default key rewrite (DDP's ``module.``)
REVISE_KEYS = [(r'^module.', '')]


@HOOKS.register_module()
class RTDETRv2ClassMismatchHook(Hook):
    """Load a checkpoint of another number of classes: the class-dependent
    layers of the head (``enc_score_head``, ``dec_score_head.*``,
    ``denoising_class_embed``) stay at their initialisation and the log
    names every such key with both shapes; everything else loads.

    mmengine would skip them with a generic size-mismatch warning, and the
    EMA hook would fail to copy them. A *resume* (``cfg.resume = True``) with
    another number of classes is an error: the optimizer state could not be
    restored.

    ``after_load_checkpoint`` runs for ``load_from``, for ``--resume`` and
    for ``tools/test.py``'s checkpoint, before the weights are loaded; the
    priority ``VERY_HIGH`` puts it before the EMA hook, which copies
    ``checkpoint['state_dict']`` into the EMA model, so the EMA model keeps
    the same initialisation as the model.
    """

    priority = 'VERY_HIGH'

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Remove the class-dependent keys whose shapes differ from the
        model's from ``checkpoint['state_dict']`` (in place).

        Raises:
            ValueError: when resuming (``runner.cfg.resume``) from a
                checkpoint with another number of classes.
        """
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        # ``cfg.resume`` is what mmengine's ``load_or_resume`` acts on
        resume = bool(runner.cfg.get('resume', False))
        drop_class_mismatch(model, checkpoint, _source(runner), REVISE_KEYS, resume=resume,
                            logger=runner.logger)


def _source(runner) -> str:
    """The file being loaded, as the config names it (an auto-resume has
    none: mmengine logs the file it found just before)."""
    load_from = runner.cfg.get('load_from')
    if load_from:
        return str(load_from)
    return 'the latest checkpoint in work_dir' if runner.cfg.get('resume') else 'the checkpoint'


def _revise(key: str, revise_keys: List[Tuple[str, str]]) -> str:
    for pattern, replacement in revise_keys:
        key = re.sub(pattern, replacement, key)
    return key


def drop_class_mismatch(model: torch.nn.Module, checkpoint: dict, filename: str,
                        revise_keys: List[Tuple[str, str]], resume: bool = False,
                        logger=None) -> List[str]:
    """Remove the class-dependent keys whose shapes differ from the model's.

    Args:
        model (nn.Module): The (unwrapped) detector.
        checkpoint (dict): As loaded; its ``state_dict`` (or the dict itself,
            for a bare state dict) is edited in place.
        filename (str): Named in the log / error.
        revise_keys (list[tuple[str, str]]): ``load_checkpoint``'s key
            rewrites (``^module.`` -> ``''``), applied before matching.
        resume (bool): Raise instead of dropping.

    Returns:
        list[str]: The dropped checkpoint keys (empty when the class counts
        agree or the model has no such layers).
    """
    state_dict = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) \
        else None
    if not isinstance(state_dict, dict):
        return []
    model_shapes: Dict[str, torch.Size] = {k: v.shape for k, v in model.state_dict().items()}
    mismatched = []
    for key, value in state_dict.items():
        name = _revise(key, revise_keys)
        if CLASS_DEPENDENT.match(name) and name in model_shapes and torch.is_tensor(value) \
                and value.shape != model_shapes[name]:
            mismatched.append((key, name, tuple(value.shape), tuple(model_shapes[name])))
    if not mismatched:
        return []
    ckpt_classes = _num_classes(state_dict, revise_keys)
    model_classes = getattr(getattr(model, 'bbox_head', None), 'num_classes', '?')
    why = (f'{filename} has {ckpt_classes} classes, the model {model_classes} '
           '(model.bbox_head.num_classes)')
    if resume:
        raise ValueError(f'cannot resume: {why}. Resume with the config the checkpoint was '
                         'trained with, or fine-tune from it with load_from (resume=False).')
    for key, *_ in mismatched:
        del state_dict[key]
    listing = ', '.join(f'{name} {list(old)} -> {list(new)}' for _, name, old, new in mismatched)
    message = (f'load_from: {why}: re-initialised {len(mismatched)} class-dependent '
               f'parameters (kept at their initialisation, not loaded): {listing}. Every '
               'other weight is loaded from the checkpoint.')
    if logger is not None:
        logger.warning(message)
    else:
        print_log(message, logger='current', level=30)
    return [key for key, *_ in mismatched]


def _num_classes(state_dict: dict, revise_keys) -> Union[int, str]:
    for key, value in state_dict.items():
        name = _revise(key, revise_keys)
        if name == 'bbox_head.enc_score_head.weight':
            return int(value.shape[0])
        if name == 'bbox_head.denoising_class_embed.weight':
            return int(value.shape[0]) - 1
    return '?'
