"""The runner of rtdetr_mm configs: mmengine's Runner plus the run-time knobs."""
import os
import os.path as osp
import re
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
from mmdet.registry import RUNNERS
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner
from mmengine.runner.checkpoint import _load_checkpoint, _load_checkpoint_to_model

from ...models.dense_heads import CLASS_DEPENDENT_LAYERS
from .image_size import apply_image_size


@RUNNERS.register_module()
class RTDETRv2Runner(Runner):
    """mmengine's ``Runner`` with three additions.

    1. ``from_cfg`` applies the knobs that must reach several places of the
       config *after* every child config and ``--cfg-options`` are merged:
       ``image_size`` (see :mod:`rtdetr_mm.engine.runner.image_size`). The
       resolved config is the one dumped into the work dir.
    2. ``save_checkpoint`` writes to ``<name>.tmp`` and renames it into place
       (``os.replace`` is atomic on POSIX), so a run killed while saving
       leaves the previous file intact and no truncated ``<name>``. The
       temporary file is flushed to disk (``fsync``) before the rename, so
       the new name never points at data still in the page cache.
    3. ``load_checkpoint`` (``load_from``, ``--resume``, ``tools/test.py``)
       with a checkpoint of another number of classes: the class-dependent
       layers of the head (``enc_score_head``, ``dec_score_head.*``,
       ``denoising_class_embed``) are left at their initialisation and the
       log names every such key with both shapes; everything else loads.
       mmengine would skip them with a generic size-mismatch warning. A
       *resume* with another number of classes is an error (the optimizer
       state could not be restored).

    Selected by ``runner_type = 'mmdet.RTDETRv2Runner'`` in
    ``configs/_base_/default_runtime.py``; ``tools/train.py``,
    ``tools/test.py`` and mmdet's own scripts build it through mmengine's
    ``RUNNERS`` registry. Code that calls ``Runner.from_cfg`` directly gets
    plain mmengine behaviour (no ``image_size``).
    """

    @classmethod
    def from_cfg(cls, cfg: Config) -> 'RTDETRv2Runner':
        cfg = Config(cfg.to_dict(), filename=cfg.filename) if isinstance(cfg, Config) \
            else Config(dict(cfg))
        size = apply_image_size(cfg)
        if size is not None:
            print_log(f'image_size: every Resize of the train/val/test pipelines set to '
                      f'(h, w) = {size}', logger='current')
        return super().from_cfg(cfg)

    def save_checkpoint(self, out_dir: str, filename: str,
                        file_client_args: Optional[dict] = None, save_optimizer: bool = True,
                        save_param_scheduler: bool = True, meta: Optional[dict] = None,
                        by_epoch: bool = True, backend_args: Optional[dict] = None) -> None:
        """``Runner.save_checkpoint`` through ``<filename>.tmp`` + rename.

        Remote backends (``backend_args`` / ``file_client_args``, URLs) are
        written directly, as mmengine does.
        """
        remote = bool(backend_args or file_client_args) or '://' in str(out_dir)
        tmp_name = filename if remote else filename + '.tmp'
        super().save_checkpoint(out_dir, tmp_name, file_client_args=file_client_args,
                                save_optimizer=save_optimizer,
                                save_param_scheduler=save_param_scheduler, meta=meta,
                                by_epoch=by_epoch, backend_args=backend_args)
        tmp_path = osp.join(out_dir, tmp_name)
        if not remote and osp.exists(tmp_path):  # only the main process writes
            _fsync(tmp_path)
            os.replace(tmp_path, osp.join(out_dir, filename))
            _fsync(out_dir)

    def load_checkpoint(self, filename: str, map_location: Union[str, Callable] = 'cpu',
                        strict: bool = False,
                        revise_keys: list = [(r'^module.', '')]):  # noqa: B006 (mmengine's)
        """``Runner.load_checkpoint`` that re-initialises the class layers of
        a checkpoint with another number of classes (see the class doc).

        The class-dependent keys are removed from the checkpoint's
        ``state_dict`` *before* ``after_load_checkpoint`` hooks run, so the
        EMA model (which ``EMAHook`` fills from ``state_dict`` on
        ``load_from``) keeps the same initialisation as the model.

        Raises:
            ValueError: on resume (``resume=True``) from a checkpoint with
                another number of classes, naming the file and both counts.
        """
        checkpoint = _load_checkpoint(filename, map_location=map_location)
        model = self.model.module if is_model_wrapper(self.model) else self.model
        drop_class_mismatch(model, checkpoint, filename, revise_keys,
                            resume=bool(self._resume), logger=self.logger)
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        checkpoint = _load_checkpoint_to_model(model, checkpoint, strict,
                                               revise_keys=revise_keys)
        self._has_loaded = True
        self.logger.info(f'Load checkpoint from {filename}')
        return checkpoint


def _fsync(path: str) -> None:
    """Flush a file (or a directory entry) to disk; best effort."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


#: parameters whose first dimension is the number of classes (+1 for the
#: denoising embedding's padding row), relative to the model
CLASS_DEPENDENT = re.compile(
    rf'^bbox_head\.({"|".join(CLASS_DEPENDENT_LAYERS)})(\.\d+)?\.(weight|bias)$')


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
