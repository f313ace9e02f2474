"""Epoch-based training that validates every N epochs, N possibly a fraction."""
import math
from typing import List, Optional, Sequence, Tuple

from mmdet.registry import LOOPS
from mmengine.logging import print_log
from mmengine.runner import EpochBasedTrainLoop
from torch.utils.data import BatchSampler

from ..runner.run_settings import RunSettingsError, epoch_length_problem


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
        """Train ``max_epochs`` epochs, validating as the class docstring says."""
        self.runner.call_hook('before_train')
        if self.fractional:
            print_log(f'validation every {self.val_every_epochs} epochs: after iterations '
                      f'{self.val_points[:6]}{" ..." if len(self.val_points) > 6 else ""} of '
                      f'{self._max_iters}', logger='current')
        while self._epoch < self._max_epochs and not self.stop_training:
            self.run_epoch()
            self._decide_current_val_interval()
            if self._validate_now(at_epoch_end=True):
                self.runner.val_loop.run()
        self.runner.call_hook('after_train')
        return self.runner.model

    def run_epoch(self) -> None:
        """One epoch, or its remainder after a mid-epoch resume."""
        self.runner.call_hook('before_train_epoch')
        self.runner.model.train()
        done = self._iter - self._epoch * len(self.dataloader)
        for idx, data_batch in self._batches(done):
            self.run_iter(idx, data_batch)
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
            self.runner.val_loop.run()
        finally:
            self.in_mid_epoch_validation = False
        self.runner.call_hook('after_mid_epoch_val')
        self.runner.model.train()  # the val loop left it in eval mode

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
