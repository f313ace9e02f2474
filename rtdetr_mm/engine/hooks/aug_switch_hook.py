"""Switch off strong augmentation and multi-scale for the last epochs."""
import copy
from typing import List, Optional

from mmdet.registry import HOOKS
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper


@HOOKS.register_module()
class RTDETRv2AugSwitchHook(Hook):
    """The official ``stop_epoch`` policy: from epoch ``max_epochs - N`` on,
    train with ``switch_pipeline`` (no photometric distortion / zoom-out /
    IoU crop) and without the multi-scale batch resize.

    The switch epoch is computed when training starts from
    ``runner.max_epochs``, so a child config or ``--cfg-options`` that changes
    the number of epochs moves it; it also applies after ``--resume`` into
    the last epochs.

    Args:
        stop_epochs_before_end (int): N (official: 3 for r18/r34/r50-m, 1 for
            r50/r101).
        switch_pipeline (list[dict], optional): Training pipeline of the last
            epochs; None keeps the pipeline.
        stop_batch_resize (bool): Disable ``RTDETRv2BatchResize`` batch
            augments at the same epoch.
    """
    priority = 'NORMAL'

    def __init__(self, stop_epochs_before_end: int, switch_pipeline: Optional[List[dict]] = None,
                 stop_batch_resize: bool = True) -> None:
        self.stop_epochs_before_end = stop_epochs_before_end
        self.switch_pipeline = switch_pipeline
        self.stop_batch_resize = stop_batch_resize
        self.switch_epoch: Optional[int] = None
        self._switched = False

    def before_train(self, runner) -> None:
        self.switch_epoch = max(runner.max_epochs - self.stop_epochs_before_end, 0)
        runner.logger.info(f'RTDETRv2AugSwitchHook: strong augmentation and multi-scale stop '
                           f'at epoch {self.switch_epoch + 1} of {runner.max_epochs}')

    def before_train_epoch(self, runner) -> None:
        if self._switched or runner.epoch < self.switch_epoch:
            return
        if self.switch_pipeline is not None:
            loader = runner.train_dataloader
            dataset = loader.dataset
            from mmengine.dataset import Compose
            dataset.pipeline = Compose(copy.deepcopy(self.switch_pipeline))
            # Workers hold a copy of the dataset: rebuild persistent ones.
            if getattr(loader, 'persistent_workers', False) and \
                    getattr(loader, '_iterator', None) is not None:
                loader._iterator._shutdown_workers()
                loader._iterator = None
        if self.stop_batch_resize:
            model = runner.model.module if is_model_wrapper(runner.model) else runner.model
            for aug in getattr(model.data_preprocessor, 'batch_augments', None) or []:
                if hasattr(aug, 'enabled'):
                    aug.enabled = False
        self._switched = True
        runner.logger.info(f'RTDETRv2AugSwitchHook: epoch {runner.epoch + 1}: switched to the '
                           'pipeline without strong augmentation'
                           + (', multi-scale off' if self.stop_batch_resize else ''))
