"""The runner of rtdetr_mm configs: mmengine's Runner plus the run-time knobs."""
import os
import os.path as osp
import shutil
from typing import Callable, Dict, Optional, TypeVar, Union

from mmdet.registry import RUNNERS
from mmengine.config import Config
from mmengine.dist import broadcast_object_list, get_world_size, is_main_process, master_only
from mmengine.logging import print_log
from mmengine.hooks import CheckpointHook, Hook
from mmengine.runner import Runner
from torch import nn

from .image_size import apply_image_size
from .latest_checkpoint import LAST_CHECKPOINT, resolve_latest_checkpoint
from .run_settings import check_run_settings
from .work_dir_lock import WorkDirLock, describe

T = TypeVar('T')

#: the default hooks mmengine 0.10's ``Runner.register_default_hooks`` defines
#: itself (there a None entry removes one; for any other name it asserts)
MMENGINE_DEFAULT_HOOKS = ('runtime_info', 'timer', 'sampler_seed', 'logger', 'param_scheduler',
                          'checkpoint')


@RUNNERS.register_module()
class RTDETRv2Runner(Runner):
    """mmengine's ``Runner`` with these additions.

    1. ``from_cfg`` first checks every run setting's type and range
       (:mod:`rtdetr_mm.engine.runner.run_settings`: one
       ``RunSettingsError`` listing each key out of range, before the model,
       a dataset or the work dir is touched), then applies the knobs that
       must reach several places of the config *after* every child config
       and ``--cfg-options`` are merged: ``image_size`` (see
       :mod:`rtdetr_mm.engine.runner.image_size`). The resolved config is
       the one dumped into the work dir.
    2. ``save_checkpoint`` writes to ``<name>.tmp`` and renames it into place
       (``os.replace`` is atomic on POSIX), so a run killed while saving
       leaves the previous file intact and no truncated ``<name>``. The
       temporary file is flushed to disk (``fsync``) before the rename, so
       the new name never points at data still in the page cache. A failed
       write (full disk, read-only folder) removes the ``.tmp`` and raises
       :class:`CheckpointSaveError` naming the path and the free space; the
       previous checkpoints and ``last_checkpoint`` are untouched.
    3. ``register_default_hooks``: ``default_hooks.<name> = None`` turns off
       any named default hook, ours (``ema``, ``aug_switch``, ...) as well as
       mmengine's own; mmengine asserts on None for names it does not define.
    4. ``train`` holds the work dir's lock file ``train.lock`` (main process;
       :mod:`rtdetr_mm.engine.runner.work_dir_lock`) from its first line to
       its end: a second training in the same work dir stops with
       ``WorkDirLockedError`` before it loads or writes anything.
       ``dump_config`` leaves the config dump of a run that holds the lock
       alone: the new run's config goes to its own log dir.
    5. ``load_or_resume``: an automatic resume (``resume=True`` without
       ``load_from``) of a moved or copied work dir resumes from the work
       dir's own checkpoint, never from the original's
       (:mod:`rtdetr_mm.engine.runner.latest_checkpoint`).

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
        check_run_settings(cfg)  # every knob in range, before anything is built
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

    def train(self) -> nn.Module:
        """mmengine's ``train``, holding the work dir's lock throughout.

        Raises:
            WorkDirLockedError: another training holds the lock (on every
                process of a distributed run: the main process decides).
        """
        lock = WorkDirLock(self.work_dir) if is_main_process() else None
        try:
            _on_main_for_all(lock.acquire if lock is not None else None)
            return super().train()
        finally:
            if lock is not None:
                lock.release()

    @master_only
    def dump_config(self) -> None:
        """mmengine's ``dump_config`` (``<work_dir>/<config name>``), unless
        another training holds the work dir: its config dump stays, this
        run's goes to this run's log dir (``<work_dir>/<timestamp>/``).

        NOTE: mmengine dumps the config in ``Runner.__init__``, before
        ``train`` can take the lock; without this a second run refused by
        the lock would already have overwritten the first run's config dump.
        """
        holder = WorkDirLock(self.work_dir).live_holder()
        if holder is None:
            return super().dump_config()
        name = (osp.basename(self.cfg.filename) if self.cfg.filename is not None
                else f'{self.timestamp}.py')
        path = osp.join(self.log_dir, name)
        self.cfg.dump(path)
        print_log(f'{self.work_dir} is held by another training ({describe(holder)}): its '
                  f'config dump stays, this run\'s config is written to {path}',
                  logger='current', level=30)

    def load_or_resume(self) -> None:
        """mmengine's ``load_or_resume``. An automatic resume (config
        ``resume=True``, no ``load_from``) first points ``last_checkpoint``
        at the checkpoint :func:`resolve_latest_checkpoint` picks, when that
        differs from the recorded path (a moved or copied work dir), with a
        warning naming both.

        NOTE: mmengine's auto-resume reads ``last_checkpoint`` itself
        (``find_latest_checkpoint``), so the file is corrected here, on the
        main process (which holds the work dir's lock), and mmengine then
        reads the corrected path on every process.

        Raises:
            LatestCheckpointError: no checkpoint this work dir can resume
                from (the paths tried are named).
        """
        if self.cfg.get('resume', False) and self.cfg.get('load_from', None) is None:
            _on_main_for_all(self._point_at_own_checkpoint)
        super().load_or_resume()

    def _point_at_own_checkpoint(self) -> None:
        """Rewrite ``last_checkpoint`` when it names another folder's file."""
        pointer = osp.join(self.work_dir, LAST_CHECKPOINT)
        # mmengine's rule: CheckpointHook(out_dir=X) saves to X/<work dir name>
        out_dirs = [osp.join(hook.out_dir, osp.basename(self.work_dir.rstrip(osp.sep)))
                    for hook in self.hooks
                    if isinstance(hook, CheckpointHook) and isinstance(hook.out_dir, str)
                    and osp.abspath(hook.out_dir) != self.work_dir]
        resolved = resolve_latest_checkpoint(self.work_dir, out_dirs)
        if resolved is None:
            return
        with open(pointer) as f:
            recorded = f.read().strip()
        if resolved == recorded:
            return
        print_log(f'{pointer} records {recorded}, outside this work dir (the work dir was '
                  f'moved or copied): resuming from {resolved}, the work dir\'s own file, and '
                  f'{pointer} now points at it.', logger='current', level=30)
        with open(pointer + '.tmp', 'w') as f:
            f.write(resolved)
        os.replace(pointer + '.tmp', pointer)

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
        tmp_path = osp.join(out_dir, tmp_name)
        try:
            super().save_checkpoint(out_dir, tmp_name, file_client_args=file_client_args,
                                    save_optimizer=save_optimizer,
                                    save_param_scheduler=save_param_scheduler, meta=meta,
                                    by_epoch=by_epoch, backend_args=backend_args)
            if not remote and osp.exists(tmp_path):  # only the main process writes
                _fsync(tmp_path)
                os.replace(tmp_path, osp.join(out_dir, filename))
                _fsync(out_dir)
        except OSError as err:
            if remote:
                raise
            raise _save_error(err, osp.join(out_dir, filename), tmp_path) from err


class CheckpointSaveError(OSError):
    """A checkpoint could not be written (``errno`` as the failed write's)."""


def _save_error(err: OSError, path: str, tmp_path: str) -> CheckpointSaveError:
    """Remove ``tmp_path``; the error naming ``path``, the cause and the free
    space on its filesystem."""
    removed = ''
    if osp.exists(tmp_path):
        try:
            os.remove(tmp_path)
            removed = f'; the partial {tmp_path} was removed'
        except OSError as rm_err:
            removed = f'; the partial {tmp_path} could not be removed ({rm_err})'
    folder = osp.dirname(path) or '.'
    try:
        free = f'{shutil.disk_usage(folder).free / 2**30:.2f} GiB free'
    except OSError as du_err:
        free = f'free space unknown ({du_err})'
    return CheckpointSaveError(
        err.errno, f'could not save the checkpoint {path}: {err.strerror or err} '
        f'({free} on the filesystem of {folder}){removed}. The previous checkpoints and '
        f'{LAST_CHECKPOINT} are unchanged. Free space (or set '
        f'default_hooks.checkpoint.out_dir / --work-dir to another disk), then resume with '
        f'--resume.')


def _on_main_for_all(fn: Optional[Callable[[], T]]) -> Optional[T]:
    """``fn()`` on the main process (None elsewhere); its result, or the
    exception it raised, on every process of a distributed run, so all of
    them go on or all stop together (no rank waits in a collective for a
    main process that has stopped)."""
    outcome = [(None, None)]
    if is_main_process():
        try:
            outcome = [(fn(), None)]
        except Exception as err:  # re-raised below, on every process
            outcome = [(None, err)]
    if get_world_size() > 1:
        broadcast_object_list(outcome)
    result, error = outcome[0]
    if error is not None:
        raise error
    return result


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
