"""The runner of rtdetr_mm configs: mmengine's Runner plus the run-time knobs."""
import os
import os.path as osp
from typing import Dict, Optional, Union

from mmdet.registry import RUNNERS
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.hooks import Hook
from mmengine.runner import Runner

from .image_size import apply_image_size

#: the default hooks mmengine 0.10's ``Runner.register_default_hooks`` defines
#: itself (there a None entry removes one; for any other name it asserts)
MMENGINE_DEFAULT_HOOKS = ('runtime_info', 'timer', 'sampler_seed', 'logger', 'param_scheduler',
                          'checkpoint')


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
    3. ``register_default_hooks``: ``default_hooks.<name> = None`` turns off
       any named default hook, ours (``ema``, ``aug_switch``, ...) as well as
       mmengine's own; mmengine asserts on None for names it does not define.

    Loading a checkpoint of another number of classes is the
    ``RTDETRv2ClassMismatchHook``'s (a default hook), not the runner's.

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

    def register_default_hooks(self, hooks: Optional[Dict[str, Union[Hook, dict, None]]] = None
                               ) -> None:
        """mmengine's ``register_default_hooks``, where a None entry also
        turns off a default hook that is not one of mmengine's own."""
        if hooks is not None:
            hooks = {name: hook for name, hook in hooks.items()
                     if hook is not None or name in MMENGINE_DEFAULT_HOOKS}
        super().register_default_hooks(hooks)

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
