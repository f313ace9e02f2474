"""Epoch-based training that validates every N epochs, N possibly a fraction,
and stops early when mmengine's ``EarlyStoppingHook`` asks."""
import math
from typing import List, Optional, Sequence, Tuple

from mmdet.registry import LOOPS
from mmengine.hooks import EarlyStoppingHook
from mmengine.logging import print_log
from mmengine.runner import EpochBasedTrainLoop
from torch.utils.data import BatchSampler

from ..hooks.aug_switch_hook import RTDETRv2AugSwitchHook
from ..runner.run_settings import RunSettingsError, epoch_length_problem

#: message hub runtime info (saved in every checkpoint) recording an early stop
EARLY_STOP_KEY = 'early_stop'


@LOOPS.register_module()
class RTDETRv2EpochBasedTrainLoop(EpochBasedTrainLoop):
    """mmengine's ``EpochBasedTrainLoop`` with a fractional ``val_interval``
    (EVAL_RATE_EPOCHS) and exact mid-epoch resume.

    ``val_interval`` an integer: mmengine's behaviour (validate after every
    N-th epoch and after the last). A fraction ``f`` (0.5 = twice per
    epoch; 1.5 = every one and a half epochs): validate after the iterations
    ``round(k * f * L)``, k = 1, 2, ..., with ``L = len(train_dataloader)``,
    and after the last. A point at the end of an epoch is validated after
    ``after_train_epoch`` (after the epoch checkpoint, as mmengine does); a
    point inside an epoch is validated right after iteration n is counted
    and followed by a resumable ``iter_<n>.pth`` (``RTDETRv2CheckpointHook``), and a better
    score there makes ``best_<key>_iter_<n>.pth``.

    Resume: a checkpoint saved inside an epoch (meta ``iter`` not a multiple
    of ``L``) continues that epoch where it stopped: the sampler skips the
    samples already consumed (``RTDETRv2ResumableSampler``; other samplers
    load and drop the batches, with a warning), so the data order equals an
    uninterrupted run.

    Early stopping (mmengine's ``EarlyStoppingHook``, ``custom_hooks``;
    ``configs/_base_/early_stopping.py``): the hook sets ``stop_training``
    in ``after_val_epoch``; mmengine's loop reads it only between epochs.
    This loop reads it after every validation, at the end of an epoch or
    inside one, and applies one rule:

    * **the end-of-training schedule is kept**: a stop request ends the run
      as if ``max_epochs`` had been set to the epoch in progress (finished)
      + N, where N is ``RTDETRv2AugSwitchHook.stop_epochs_before_end``: the
      epoch in progress is finished, then N epochs are trained without strong
      augmentation / multi-scale (the aug switch hook counts from the new
      ``max_epochs``), validating as usual, and the run ends after them
      (never later than the configured ``max_epochs``). Further stop
      requests in those N epochs change nothing.
    * **a request at once ends the run** when there is nothing to keep: no
      aug switch hook (or N = 0), or the switch has already happened (the
      run is in its last N epochs). Inside an epoch the run stops right after
      that validation and its ``iter_<n>.pth`` (the rest of the epoch is not
      trained, ``after_train_epoch`` is not called); at the end of an epoch
      it stops before the next one, and ``RTDETRv2CheckpointHook`` saves that
      epoch's checkpoint again in ``after_train`` (it was written before the
      validation), so the last checkpoint holds the stop. ``after_train``
      hooks run either way.
    * **the stop is recorded** in the message hub (runtime info
      ``early_stop``: ``requested_at`` iteration, ``end_epoch``,
      ``end_iter``; written with every later checkpoint). ``--resume`` from
      a checkpoint that holds it keeps that end: from the last checkpoint of
      a stopped run nothing is trained (the log says so), from one written
      in the N final epochs the run trains to the recorded end.
    * **a monitor the validation does not report is an error**
      (:class:`RunSettingsError` listing the reported keys) at the first
      validation. NOTE: mmengine only warns (``strict=False``, its default)
      and never stops, so a typo in ``monitor`` silently turned early
      stopping off.

    NOTE: mmengine's ``EarlyStoppingHook`` keeps its best score and its
    count of validations without improvement in memory only: a run resumed
    *before* it asked to stop counts ``patience`` again from the resume on
    (its first validation sets the best score), so it may stop at another
    validation than the uninterrupted run would.

    Args:
        runner, dataloader, max_epochs, dynamic_intervals: As
            ``EpochBasedTrainLoop`` (``dynamic_intervals`` integer-only).
        val_begin (int): Validate from this epoch on (0: from the start).
        val_interval (int | float): Epochs between validations, > 0.
    """

    def __init__(self, runner, dataloader, max_epochs: int, val_begin: int = 0,
                 val_interval: float = 1,
                 dynamic_intervals: Optional[List[Tuple[int, int]]] = None) -> None:
        if not val_interval > 0:
            raise ValueError(f'train_cfg.val_interval must be > 0, got {val_interval}')
        self.fractional = float(val_interval) != int(val_interval)
        if self.fractional and dynamic_intervals:
            raise ValueError('train_cfg.dynamic_intervals needs an integer val_interval')
        super().__init__(runner, dataloader, max_epochs, val_begin=val_begin,
                         val_interval=1 if self.fractional else int(val_interval),
                         dynamic_intervals=dynamic_intervals)
        self._check_epoch_length(runner.world_size)
        self.val_every_epochs = float(val_interval)
        #: iteration counts after which validation runs (fractional mode)
        self.val_points: List[int] = self._val_points() if self.fractional else []
        #: True while a validation inside an epoch runs
        self.in_mid_epoch_validation = False
        #: the recorded early stop (``requested_at``, ``end_epoch``,
        #: ``end_iter``), None until ``EarlyStoppingHook`` asks
        self.early_stop: Optional[dict] = None
        #: True when an early stop ended the run inside an epoch
        self._stopped_in_epoch = False

    def _check_epoch_length(self, world_size: int) -> None:
        """Raise :class:`RunSettingsError` when an epoch has no iteration
        (a batch larger than the dataset with ``drop_last``), naming the
        cause; mmengine would go on and fail in the warm-up scheduler."""
        if len(self.dataloader) > 0:
            return
        batches = self.dataloader.batch_sampler
        batch_size = getattr(batches, 'batch_size', None) or self.dataloader.batch_size or 1
        drop_last = bool(getattr(batches, 'drop_last', self.dataloader.drop_last))
        why = epoch_length_problem(len(self.dataloader.dataset), batch_size, drop_last,
                                   world_size)
        raise RunSettingsError(why or 'the train dataloader yields 0 iterations per epoch')

    def _val_points(self) -> List[int]:
        epoch_length = len(self.dataloader)
        step = self.val_every_epochs * epoch_length
        points = {min(self._max_iters, max(1, round(k * step)))
                  for k in range(1, math.ceil(self._max_iters / step) + 1)}
        points.add(self._max_iters)
        return sorted(points)

    def run(self):
        """Train ``max_epochs`` epochs, validating as the class docstring says;
        end early as recorded by :meth:`_after_validation`."""
        self._restore_early_stop()  # before before_train: the aug switch reads max_epochs
        self.runner.call_hook('before_train')
        if self.fractional:
            print_log(f'validation every {self.val_every_epochs} epochs: after iterations '
                      f'{self.val_points[:6]}{" ..." if len(self.val_points) > 6 else ""} of '
                      f'{self._max_iters}', logger='current')
        while not self._ended():
            self.run_epoch()
            if self._stopped_in_epoch:
                break
            self._decide_current_val_interval()
            if self._validate_now(at_epoch_end=True):
                self._after_validation(self.runner.val_loop.run(), in_epoch=False)
        self.runner.call_hook('after_train')
        return self.runner.model

    def _ended(self) -> bool:
        if self._epoch >= self._max_epochs or self.stop_training:
            return True
        return self.early_stop is not None and self._iter >= self.early_stop['end_iter']

    def run_epoch(self) -> None:
        """One epoch, or its remainder after a mid-epoch resume; cut short by
        an early stop at a validation inside it (then without
        ``after_train_epoch``: the epoch did not end)."""
        self.runner.call_hook('before_train_epoch')
        self.runner.model.train()
        done = self._iter - self._epoch * len(self.dataloader)
        for idx, data_batch in self._batches(done):
            self.run_iter(idx, data_batch)
            if self._stopped_in_epoch:
                return
        self.runner.call_hook('after_train_epoch')
        self._epoch += 1

    def run_iter(self, idx: int, data_batch: Sequence[dict]) -> None:
        """One batch; at a mid-epoch validation point, validate and save."""
        self.runner.call_hook('before_train_iter', batch_idx=idx, data_batch=data_batch)
        outputs = self.runner.model.train_step(data_batch,
                                               optim_wrapper=self.runner.optim_wrapper)
        self.runner.call_hook('after_train_iter', batch_idx=idx, data_batch=data_batch,
                              outputs=outputs)
        self._iter += 1
        # counted first, so that the validation's logs, best checkpoint and
        # iter_<n>.pth all say iteration n
        if self._validate_now(at_epoch_end=False, done=self._iter, batch_idx=idx):
            self._validate_mid_epoch()

    def _validate_now(self, at_epoch_end: bool, done: int = 0, batch_idx: int = 0) -> bool:
        if self.runner.val_loop is None:
            return False
        if not self.fractional:
            return at_epoch_end and self._epoch >= self.val_begin and (
                self._epoch % self.val_interval == 0 or self._epoch == self._max_epochs)
        if at_epoch_end:
            return self._iter in self.val_points and self._epoch >= self.val_begin
        last_in_epoch = batch_idx == len(self.dataloader) - 1
        return (not last_in_epoch and done in self.val_points
                and done >= self.val_begin * len(self.dataloader))

    def _validate_mid_epoch(self) -> None:
        """Validate inside an epoch, framed by two custom hook events:
        ``before_mid_epoch_val`` and ``after_mid_epoch_val`` (the checkpoint
        hook names its best checkpoint by iteration, then saves
        ``iter_<n>.pth``)."""
        self.in_mid_epoch_validation = True
        self.runner.call_hook('before_mid_epoch_val')
        try:
            metrics = self.runner.val_loop.run()
        finally:
            self.in_mid_epoch_validation = False
        # before iter_<n>.pth is written, so that it holds an early stop
        self._after_validation(metrics, in_epoch=True)
        self.runner.call_hook('after_mid_epoch_val')
        self.runner.model.train()  # the val loop left it in eval mode

    # -- early stopping (mmengine's EarlyStoppingHook) ---------------------
    def _after_validation(self, metrics: Optional[dict], in_epoch: bool) -> None:
        """Check every ``EarlyStoppingHook``'s monitor against ``metrics``;
        turn its stop request (``stop_training``) into the end of the run
        and record it (the class docstring's rule)."""
        self._check_monitors(metrics or {})
        if not self.stop_training:
            return
        if self.early_stop is not None:  # the end is already set
            self.stop_training = False
            return
        length = len(self.dataloader)
        epochs_done = self._epoch + 1 if in_epoch else self._epoch  # once this epoch ends
        tail = self._epochs_before_switch_end()
        end_epoch = min(self._max_epochs, epochs_done + tail)
        where = f'iteration {self._iter} (epoch {self._epoch + 1 if in_epoch else self._epoch})'
        if tail == 0 or end_epoch * length <= self._iter:
            end_iter = self._iter  # nothing to keep: stop here
            end_epoch = math.ceil(end_iter / length)
            self._stopped_in_epoch = in_epoch
            print_log(f'EarlyStoppingHook asked to stop at {where}: training ends here',
                      logger='current')
        else:
            end_iter = end_epoch * length
            self.stop_training = False
            print_log(f'EarlyStoppingHook asked to stop at {where}: '
                      f'{"the epoch is finished, then " if in_epoch else ""}the last '
                      f'{end_epoch - epochs_done} epoch(s) train without strong augmentation / '
                      f'multi-scale (RTDETRv2AugSwitchHook): the run ends after epoch '
                      f'{end_epoch} (max_epochs was {self._max_epochs})', logger='current')
            self._end_at(end_epoch)
        self.early_stop = dict(requested_at=self._iter, end_epoch=end_epoch, end_iter=end_iter)
        self.runner.message_hub.update_info(EARLY_STOP_KEY, dict(self.early_stop))

    def _epochs_before_switch_end(self) -> int:
        """N of an aug switch hook that has not switched yet (0: none)."""
        return max((hook.stop_epochs_before_end for hook in self.runner.hooks
                    if isinstance(hook, RTDETRv2AugSwitchHook) and not hook.switched),
                   default=0)

    def _end_at(self, end_epoch: int) -> None:
        """Make ``end_epoch`` the last epoch (``max_epochs``)."""
        self._max_epochs = end_epoch
        self._max_iters = end_epoch * len(self.dataloader)
        if self.fractional:
            self.val_points = self._val_points()

    def _restore_early_stop(self) -> None:
        """After ``--resume``: the early stop recorded in the checkpoint's
        message hub, if any, sets the end of the run again."""
        record = self.runner.message_hub.get_info(EARLY_STOP_KEY)
        if not record:
            return
        self.early_stop = dict(record)
        end_epoch, end_iter = record['end_epoch'], record['end_iter']
        if end_iter == end_epoch * len(self.dataloader) and end_epoch < self._max_epochs:
            self._end_at(end_epoch)
        if self._iter >= end_iter:
            print_log(f'this run already ended: EarlyStoppingHook asked to stop at iteration '
                      f'{record["requested_at"]} and the run ended after iteration {end_iter} '
                      f'(epoch {end_epoch}); nothing left to train. To train on from these '
                      f'weights, start a new run from them (load_from=<checkpoint>, '
                      f'resume=False)', logger='current', level=30)
        else:
            print_log(f'resuming a run that EarlyStoppingHook asked to stop at iteration '
                      f'{record["requested_at"]}: it ends after epoch {end_epoch}',
                      logger='current')

    def _check_monitors(self, metrics: dict) -> None:
        """Raise :class:`RunSettingsError` when an ``EarlyStoppingHook``
        monitors a key that ``metrics`` (not empty) lacks."""
        if not metrics:
            return
        for hook in self.runner.hooks:
            if isinstance(hook, EarlyStoppingHook) and hook.monitor not in metrics:
                raise RunSettingsError(
                    f'custom_hooks: EarlyStoppingHook monitor={hook.monitor!r} is not a '
                    f'metric of the validation, which reports: {", ".join(sorted(metrics))}; '
                    "set monitor to one of them (e.g. 'coco/bbox_mAP')")

    def _batches(self, skip: int):
        """``enumerate(dataloader)`` without its first ``skip`` batches."""
        if skip <= 0:
            return enumerate(self.dataloader)
        print_log(f'resuming inside epoch {self._epoch + 1}: skipping the {skip} batches '
                  'trained before the checkpoint', logger='current')
        sampler = self.dataloader.sampler
        batch_sampler = self.dataloader.batch_sampler
        if hasattr(sampler, 'skip_next') and type(batch_sampler) is BatchSampler:
            sampler.skip_next(skip * batch_sampler.batch_size)
            return enumerate(self.dataloader, start=skip)
        print_log(f'{type(sampler).__name__} / {type(batch_sampler).__name__} cannot skip '
                  'samples: loading and dropping the batches instead (use '
                  'RTDETRv2ResumableSampler with the default batch sampler to avoid it)',
                  logger='current', level=30)
        return _drop_first(enumerate(self.dataloader), skip)


def _drop_first(iterator, count: int):
    for i, item in iterator:
        if i >= count:
            yield i, item
