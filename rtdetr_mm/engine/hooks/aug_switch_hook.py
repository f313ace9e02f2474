"""Stop strong augmentation and multi-scale for the last epochs (official
``stop_epoch`` policy of RT-DETRv2)."""
import copy
from typing import List, Optional

from mmdet.registry import HOOKS
from mmengine.dataset import Compose
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.runner import IterBasedTrainLoop

from rtdetr_mm.datasets.walk import pipeline_owners


@HOOKS.register_module()
class RTDETRv2AugSwitchHook(Hook):
    """From epoch ``max_epochs - N`` on (0-based), train with
    ``switch_pipeline`` and without the multi-scale batch resize.

    The official code skips RandomPhotometricDistort / RandomZoomOut /
    RandomIoUCrop when ``epoch >= policy.epoch`` and stops the multi-scale
    collate at the same ``stop_epoch``; with N = ``stop_epochs_before_end``
    that epoch is ``max_epochs - N`` (official: N = 1 for r50/r101 (71 of 72),
    N = 3 for r18/r34 (117 of 120) and r50-m (81 of 84)).

    * The switch epoch is computed in ``before_train`` from
      ``runner.max_epochs``, never when the config is parsed, so a child
      config or ``--cfg-options train_cfg.max_epochs=...`` moves it.
    * The switch is done in ``before_train_epoch`` of the first epoch with
      ``runner.epoch >= switch_epoch``, once: so a run resumed (``--resume``)
      into an epoch past the switch point switches before its first
      iteration. It is idempotent (a second call does nothing).
    * Early stopping (``EarlyStoppingHook``): the switch epoch follows the
      runner's ``max_epochs`` until the switch is done (recomputed at each
      ``before_train_epoch``). A stop request before the switch makes
      ``RTDETRv2EpochBasedTrainLoop`` end the run N epochs after the epoch
      in progress (it lowers ``max_epochs``), so these N epochs still train
      without strong augmentation / multi-scale; after the switch a request
      stops the run at once. ``switched`` tells the loop which applies.
    * Pipeline: the train dataloader's dataset pipeline (inside
      ``ConcatDataset`` / ``RepeatDataset`` / ``ClassBalancedDataset``
      wrappers too) is replaced by ``Compose(switch_pipeline)``. Worker
      processes hold their own copy of the dataset: with
      ``persistent_workers=True`` the running workers are shut down and the
      dataloader's iterator dropped, so the next epoch starts fresh workers
      with the new pipeline (without persistent workers, new workers are
      made every epoch anyway).
    * Batch resize: every data-preprocessor module with an ``enabled``
      attribute in ``batch_augments`` (``RTDETRv2BatchResize``) gets
      ``enabled = False`` (the model is unwrapped from DDP first).

    NOTE: not a subclass of mmdet's ``PipelineSwitchHook``, which would
    leave nothing to inherit: it takes an absolute ``switch_epoch`` (fixed
    when the config is parsed, so ``max_epochs`` overrides would not move
    it), replaces only the top-level dataset's pipeline (not inside dataset
    wrappers), keeps the multi-scale batch resize, and restarts persistent
    workers by flipping the DataLoader's name-mangled ``__initialized`` flag.

    Args:
        stop_epochs_before_end (int): N, the number of final epochs trained
            without strong augmentation / multi-scale.
        switch_pipeline (list[dict], optional): Training pipeline of the last
            epochs (the training pipeline without PhotoMetricDistortion,
            Expand and MinIoURandomCrop). None keeps the pipeline.
        stop_batch_resize (bool): Switch the batch resize off at the same
            epoch. Defaults to True.
    """
    priority = 'NORMAL'

    def __init__(self, stop_epochs_before_end: int,
                 switch_pipeline: Optional[List[dict]] = None,
                 stop_batch_resize: bool = True) -> None:
        if stop_epochs_before_end < 0:
            raise ValueError(f'stop_epochs_before_end must be >= 0, got {stop_epochs_before_end}')
        self.stop_epochs_before_end = stop_epochs_before_end
        self.switch_pipeline = switch_pipeline
        self.stop_batch_resize = stop_batch_resize
        self.switch_epoch: Optional[int] = None
        self._switched = False

    def before_train(self, runner) -> None:
        """Compute the switch epoch from the runner's ``max_epochs``."""
        if isinstance(runner.train_loop, IterBasedTrainLoop):
            raise TypeError('RTDETRv2AugSwitchHook counts epochs; it needs an epoch-based '
                            'train loop (train_cfg.type=EpochBasedTrainLoop)')
        self.switch_epoch = None
        self._follow_max_epochs(runner)

    @property
    def switched(self) -> bool:
        """True once the run trains without strong augmentation."""
        return self._switched

    def _follow_max_epochs(self, runner) -> None:
        """``switch_epoch = max_epochs - N`` for the runner's current
        ``max_epochs`` (which an early stop lowers); logs each new value."""
        max_epochs = runner.max_epochs
        switch_epoch = max(max_epochs - self.stop_epochs_before_end, 0)
        if switch_epoch == self.switch_epoch:
            return
        moved = self.switch_epoch is not None
        self.switch_epoch = switch_epoch
        if self.stop_epochs_before_end >= max_epochs and not moved:
            runner.logger.warning(
                f'RTDETRv2AugSwitchHook: stop_epochs_before_end={self.stop_epochs_before_end} '
                f'>= max_epochs={max_epochs}: the whole run trains without strong augmentation')
        runner.logger.info(
            f'RTDETRv2AugSwitchHook: {"the run now ends early (early stopping): " if moved else ""}'
            f'strong augmentation{" and multi-scale" if self.stop_batch_resize else ""} stop '
            f'from epoch {self.switch_epoch + 1} of {max_epochs} (the last '
            f'{max_epochs - self.switch_epoch})')

    def before_train_epoch(self, runner) -> None:
        """Switch once, at the first epoch at or past the switch epoch (of
        the current ``max_epochs``)."""
        if self._switched:
            return
        if self.switch_epoch is None:  # before_train was not called (tests)
            self.before_train(runner)
        self._follow_max_epochs(runner)
        if runner.epoch < self.switch_epoch:
            return
        done = []
        if self.switch_pipeline is not None:
            self._switch_pipeline(runner.train_dataloader)
            done.append('pipeline without strong augmentation')
        if self.stop_batch_resize:
            count = self._disable_batch_resize(runner.model)
            if count:
                done.append(f'{count} batch resize module(s) off')
            else:
                runner.logger.warning('RTDETRv2AugSwitchHook: stop_batch_resize=True but the '
                                      'data preprocessor has no batch augment to switch off')
        self._switched = True
        runner.logger.info(f'RTDETRv2AugSwitchHook: epoch {runner.epoch + 1}: '
                           + (', '.join(done) or 'nothing to switch'))

    def _switch_pipeline(self, dataloader) -> None:
        for dataset in pipeline_owners(dataloader.dataset):
            dataset.pipeline = Compose(copy.deepcopy(self.switch_pipeline))
        # Workers hold a copy of the dataset made when they started.
        iterator = getattr(dataloader, '_iterator', None)
        if iterator is not None:
            shutdown = getattr(iterator, '_shutdown_workers', None)
            if shutdown is not None:
                shutdown()
            dataloader._iterator = None

    @staticmethod
    def _disable_batch_resize(model) -> int:
        if is_model_wrapper(model):
            model = model.module
        preprocessor = getattr(model, 'data_preprocessor', None)
        count = 0
        for aug in getattr(preprocessor, 'batch_augments', None) or []:
            if hasattr(aug, 'enabled'):
                aug.enabled = False
                count += 1
        return count
