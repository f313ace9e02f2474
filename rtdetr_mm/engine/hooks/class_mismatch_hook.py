"""Fine-tuning from a checkpoint with another number of classes."""
import re
from typing import List, Tuple

import torch
from mmdet.registry import HOOKS
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

from ...models.detectors.checkpoint_fit import (CheckpointMismatchError, class_change_message,
                                                compare_state_dicts, is_class_dependent)

#: ``Runner.load_checkpoint``'s default key rewrite (DDP's ``module.``)
REVISE_KEYS = [(r'^module.', '')]


@HOOKS.register_module()
class RTDETRv2ClassMismatchHook(Hook):
    """Load a checkpoint of another number of classes: the class-dependent
    layers of the head (``enc_score_head``, ``dec_score_head.*``,
    ``denoising_class_embed``) stay at their initialisation and the log
    names every such key with both shapes; everything else loads.

    The checkpoint's class-dependent tensors are replaced by the model's
    own (initial) values, so the EMA hook, which copies
    ``checkpoint['state_dict']`` into the EMA model, gives the EMA model the
    same initialisation, and the detector's checkpoint fit check
    (``models/detectors/checkpoint_fit.py``) then finds them fitting. Any
    other difference is left to that check, which refuses it (unless
    ``model.checkpoint_fit='off'``). With ``model.checkpoint_fit='exact'``
    (``tools/test.py``, the ONNX export) nothing is replaced: that check
    refuses the other class count. A *resume* (``cfg.resume = True``) with
    another number of classes is an error: the optimizer state could not be
    restored.

    ``after_load_checkpoint`` runs for ``load_from``, for ``--resume`` and
    for ``tools/test.py``'s checkpoint, before the weights are loaded; the
    priority ``VERY_HIGH`` puts it before the EMA hook.
    """

    priority = 'VERY_HIGH'

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Replace, in ``checkpoint['state_dict']`` (in place), the
        class-dependent tensors that differ from the model's only in the
        number of classes by the model's.

        Raises:
            CheckpointMismatchError: when resuming (``runner.cfg.resume``) from a
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
    """Replace the class-dependent tensors that differ from the model's only
    in the number of classes by the model's current values.

    Args:
        model (nn.Module): The (unwrapped) detector; its ``checkpoint_fit``
            ``'exact'`` leaves everything to the detector's fit check.
        checkpoint (dict): As loaded; its ``state_dict`` (or the dict itself,
            for a bare state dict) is edited in place.
        filename (str): Named in the log / error.
        revise_keys (list[tuple[str, str]]): ``load_checkpoint``'s key
            rewrites (``^module.`` -> ``''``), applied before matching.
        resume (bool): Raise instead of replacing.

    Returns:
        list[str]: The replaced checkpoint keys (empty when the class counts
        agree or the model has no such layers).
    """
    state_dict = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) \
        else None
    if not isinstance(state_dict, dict):
        return []
    names = {_revise(key, revise_keys): key for key in state_dict}
    class_state = {name: state_dict[key] for name, key in names.items()
                   if is_class_dependent(name)}
    model_state = model.state_dict()
    fit = compare_state_dicts(
        {name: value for name, value in model_state.items() if is_class_dependent(name)},
        class_state)
    if not fit.class_changed or fit.mismatched:
        return []  # the class layers fit, or differ beyond the count: the fit check's
    if resume:
        why = (f'{filename} has {fit.checkpoint_classes} classes, the model '
               f'{fit.model_classes} (model.bbox_head.num_classes)')
        raise CheckpointMismatchError(
            f'cannot resume: {why}. Resume with the config the checkpoint was trained with, '
            'or fine-tune from it with load_from (resume=False).')
    if getattr(model, 'checkpoint_fit', 'fine_tune') == 'exact':
        return []
    for name, _, _ in fit.class_changed:
        state_dict[names[name]] = model_state[name].detach().clone()
    message = 'load_from: ' + class_change_message(fit, filename)
    if logger is not None:
        logger.warning(message)
    else:
        print_log(message, logger='current', level=30)
    return [names[name] for name, _, _ in fit.class_changed]
