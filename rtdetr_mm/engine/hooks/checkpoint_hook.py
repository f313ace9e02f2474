"""Checkpoints that are never lost: write first, delete old ones after."""
import math
import os
import os.path as osp
from typing import Optional

from mmdet.registry import HOOKS
from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook


@HOOKS.register_module()
class RTDETRv2CheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook`` (same arguments and file names) with:

    - **safe ordering**: a new checkpoint (regular or best) is complete and
      renamed into place (``RTDETRv2Runner.save_checkpoint`` writes
      ``<name>.tmp`` then renames) *before* the checkpoints it replaces are
      deleted and before ``last_checkpoint`` points at it. mmengine deletes
      the oldest kept checkpoint and the previous best first, so a run killed
      while saving could be left with neither.
    - **mid-epoch checkpoints** for a fractional ``train_cfg.val_interval``
      (``RTDETRv2EpochBasedTrainLoop``): after each mid-epoch validation the
      loop frames each mid-epoch validation with the custom hook events
      ``before_mid_epoch_val`` / ``after_mid_epoch_val`` (``Runner.call_hook``);
      a best checkpoint found there is named ``best_<key>_iter_<n>.pth``, and
      after it the hook writes ``iter_<n>.pth`` (resumable: meta epoch =
      current epoch, iter = ``n`` iterations done) and deletes the previous
      mid-epoch file.
    - **no best checkpoint without a metric**: a ``save_best`` score of -1
      (what ``CocoMetric`` reports when there is no ground truth) or NaN is
      not a score: it is never saved as "best"; a warning names the key and
      the value instead.
    """

    #: file name of the newest mid-epoch checkpoint (set once one is saved)
    _mid_epoch_ckpt: Optional[str] = None
    #: True between ``before_mid_epoch_val`` and ``after_mid_epoch_val``
    _in_mid_epoch_val: bool = False

    def before_train(self, runner) -> None:
        """mmengine's ``before_train``, plus a warning when the runner does
        not write checkpoints atomically (a plain mmengine ``Runner``)."""
        super().before_train(runner)
        from ..runner import RTDETRv2Runner
        if not isinstance(runner, RTDETRv2Runner):
            runner.logger.warning(
                f'RTDETRv2CheckpointHook: {type(runner).__name__}.save_checkpoint writes '
                'checkpoints in place, so a run killed while saving leaves a truncated file; '
                "use runner_type = 'mmdet.RTDETRv2Runner' (tmp file + rename).")

    def after_train(self, runner) -> None:
        """``save_last`` also for a run stopped early (``EarlyStoppingHook``)
        at the end of an epoch: that epoch's checkpoint was written before
        the validation that stopped the run, so it is saved (again), to be
        the last one and to hold the stop that ``--resume`` reads (a stop
        inside an epoch is already in its ``iter_<n>.pth``). Then mmengine's
        ``after_train``."""
        loop = runner.train_loop
        if (self.save_last and self.by_epoch and getattr(loop, 'stop_training', False)
                and self._mid_epoch_ckpt != f'iter_{runner.iter}.pth'):
            runner.logger.info(f'Saving checkpoint at {runner.epoch} epochs (stopped early)')
            self._save_checkpoint_with_step(runner, runner.epoch,
                                            dict(epoch=runner.epoch, iter=runner.iter))
        super().after_train(runner)

    # -- regular checkpoints ------------------------------------------------
    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        """Save ``filename_tmpl.format(step)``, point ``last_checkpoint`` at it,
        then drop the checkpoints beyond ``max_keep_ckpts``."""
        self._write(runner, self.filename_tmpl.format(step), meta, by_epoch=self.by_epoch)
        if self.max_keep_ckpts > 0 and (not self.keep_ckpt_ids or
                                        self.keep_ckpt_ids[-1] != step):
            dropped = None
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                dropped = self.keep_ckpt_ids.popleft()
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))
            if dropped is not None:
                self._remove(self.filename_tmpl.format(dropped))
        self._drop_mid_epoch_checkpoint(keep=None)

    # -- mid-epoch checkpoints (custom hook events of the train loop) -------
    def before_mid_epoch_val(self, runner) -> None:
        """A validation inside an epoch starts: a best checkpoint found by
        it is named by iteration."""
        self._in_mid_epoch_val = True

    def after_mid_epoch_val(self, runner) -> None:
        """Save ``iter_<n>.pth`` after the n-th iteration of the run, inside
        an epoch (meta: epoch = the current, unfinished epoch, iter = n);
        replaces the previous mid-epoch checkpoint."""
        self._in_mid_epoch_val = False
        filename = f'iter_{runner.iter}.pth'
        self._write(runner, filename, dict(epoch=runner.epoch, iter=runner.iter),
                    by_epoch=False)
        self._drop_mid_epoch_checkpoint(keep=filename)
        self._mid_epoch_ckpt = filename

    def _write(self, runner, filename: str, meta: dict, by_epoch: bool) -> None:
        self.last_ckpt = self.file_backend.join_path(self.out_dir, filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(self.out_dir, filename, self.file_client_args,
                               save_optimizer=self.save_optimizer,
                               save_param_scheduler=self.save_param_scheduler,
                               meta=meta, by_epoch=by_epoch, backend_args=self.backend_args,
                               **self.args)  # extra hook arguments, as mmengine passes them
        if is_main_process():
            pointer = osp.join(runner.work_dir, 'last_checkpoint')
            with open(pointer + '.tmp', 'w') as f:
                f.write(self.last_ckpt)
            os.replace(pointer + '.tmp', pointer)

    def _drop_mid_epoch_checkpoint(self, keep: Optional[str]) -> None:
        if self._mid_epoch_ckpt is not None and self._mid_epoch_ckpt != keep:
            self._remove(self._mid_epoch_ckpt)
            self._mid_epoch_ckpt = None

    def _remove(self, filename: str) -> None:
        if not is_main_process():
            return
        path = self.file_backend.join_path(self.out_dir, filename)
        if self.file_backend.isfile(path):
            self.file_backend.remove(path)

    # -- best checkpoints ---------------------------------------------------
    def _save_best_checkpoint(self, runner, metrics) -> None:
        """``CheckpointHook._save_best_checkpoint``, but the previous best is
        deleted only after the new one is saved; mid-epoch names by
        iteration."""
        if not self.save_best:
            return
        metrics = self._without_missing_scores(runner, metrics)
        single = len(self.key_indicators) == 1
        previous = ({'_': self.best_ckpt_path} if single
                    else dict(getattr(self, 'best_ckpt_path_dict', {})))
        # Hide the previous paths so the parent does not delete them first.
        if single:
            self.best_ckpt_path = None
        else:
            self.best_ckpt_path_dict = {k: None for k in previous}
        mid_epoch = self._in_mid_epoch_val
        saved = (self.by_epoch, self.filename_tmpl, self.last_ckpt)
        if mid_epoch:
            # name by iteration; skip the parent's trailing re-save of a
            # regular checkpoint (the loop saves iter_<n>.pth right after).
            # (a template without a placeholder formats to itself)
            self.by_epoch, self.last_ckpt = False, None
            self.filename_tmpl = f'iter_{runner.iter}.pth'
        try:
            super()._save_best_checkpoint(runner, metrics)
        finally:
            self.by_epoch, self.filename_tmpl = saved[0], saved[1]
            if mid_epoch:
                self.last_ckpt = saved[2]
            current = ({'_': self.best_ckpt_path} if single
                       else dict(self.best_ckpt_path_dict))
            for key, old in previous.items():
                new = current.get(key)
                if new is None:  # not improved: keep the previous best
                    if single:
                        self.best_ckpt_path = old
                    else:
                        self.best_ckpt_path_dict[key] = old
                elif old and old != new and is_main_process() and self.file_backend.isfile(old):
                    self.file_backend.remove(old)
                    runner.logger.info(f'The previous best checkpoint {old} is removed')

    def _without_missing_scores(self, runner, metrics: dict) -> dict:
        """``metrics`` with each ``save_best`` score that is not a score
        (-1 or NaN) replaced by ``None``, which mmengine's
        ``_save_best_checkpoint`` skips; warns once per such key.

        NOTE: mmengine compares -1 like any number, so the first validation
        of a split without ground truth saved a "best" checkpoint at mAP -1.
        -1 is pycocotools' "no ground truth" value (COCOeval.summarize).
        """
        if 'auto' in self.key_indicators:  # resolved by the parent from the first key
            return metrics
        out = dict(metrics)
        for key in self.key_indicators:
            score = out.get(key)
            if score is None:
                continue
            value = float(score)
            if value == -1 or math.isnan(value):
                out[key] = None
                when = f'epoch {runner.epoch}' if self.by_epoch else f'iteration {runner.iter}'
                runner.logger.warning(
                    f'{type(self).__name__}: save_best={key!r} is {value} at {when}: no '
                    'metric (CocoMetric gives -1 when the evaluation has no ground truth: '
                    'check that the val_evaluator ann_file / val dataset holds annotations); '
                    'no best checkpoint is written for it')
        return out
