"""Linear LR warm-up whose length is a ratio of the run or a fixed count."""
import math
from typing import Optional

from mmdet.registry import PARAM_SCHEDULERS
from mmengine.logging import print_log
from mmengine.optim import LinearLR


@PARAM_SCHEDULERS.register_module()
class RTDETRv2LinearWarmupLR(LinearLR):
    """Linear warm-up from ``base_lr / W`` to ``base_lr`` over ``W`` optimizer
    steps, then nothing (the lr stays at the base value).

    ``W`` is resolved when the runner builds the scheduler, from the real
    length of the run:

    - ``warmup_ratio`` (WARMUP_RATIO) set: ``W = max(1, round(warmup_ratio *
      S))`` with ``S = floor(E * L / A)`` optimizer steps, for ``E`` =
      ``train_cfg.max_epochs`` (or the scheduler's ``end`` - ``begin``),
      ``L`` = batches per epoch (``len(train_dataloader)``: dataset size,
      batch size, world size, ``drop_last``) and ``A`` =
      ``optim_wrapper.accumulative_counts``;
    - otherwise ``W = warmup_steps`` (official: 2000).

    The schedule advances once per micro-batch (mmengine's
    ``ParamSchedulerHook``), so it spans ``W * A`` iterations; with ``A = 1``
    the lr of iteration ``t`` is exactly the official ``base_lr * min(1,
    (t + 1) / W)``.

    Config (in ``param_scheduler``; ``by_epoch=True`` with
    ``convert_to_iter_based=True`` is what makes mmengine pass the epoch
    length)::

        dict(type='RTDETRv2LinearWarmupLR', warmup_ratio=None, warmup_steps=2000,
             by_epoch=True, convert_to_iter_based=True)

    Attributes:
        warmup_steps (int): ``W``, resolved.
        warmup_iters (int): ``W * A``, the iteration at which the warm-up ends.
    """

    def __init__(self, optimizer, warmup_steps: int, accumulative_counts: int = 1,
                 begin: int = 0, last_step: int = -1, verbose: bool = False) -> None:
        if warmup_steps < 1:
            raise ValueError(f'warm-up must last at least 1 optimizer step, got {warmup_steps}')
        self.warmup_steps = int(warmup_steps)
        self.warmup_iters = self.warmup_steps * accumulative_counts
        super().__init__(optimizer, start_factor=1.0 / self.warmup_iters, end_factor=1.0,
                         begin=begin, end=begin + self.warmup_iters, last_step=last_step,
                         by_epoch=False, verbose=verbose)

    @classmethod
    def build_iter_from_epoch(cls, optimizer, begin: int = 0, end: Optional[int] = None,
                              by_epoch: bool = True, epoch_length: Optional[int] = None,
                              warmup_ratio: Optional[float] = None, warmup_steps: int = 2000,
                              last_step: int = -1, verbose: bool = False
                              ) -> 'RTDETRv2LinearWarmupLR':
        """Resolve ``W`` (see the class docstring); ``begin``/``end`` are in
        epochs (``end`` defaults to ``train_cfg.max_epochs``)."""
        if not by_epoch or not epoch_length:
            raise ValueError('RTDETRv2LinearWarmupLR needs by_epoch=True and '
                             'convert_to_iter_based=True (to receive the epoch length)')
        accumulative_counts = int(getattr(optimizer, '_accumulative_counts', 1))
        if warmup_ratio is not None:
            if not 0.0 < warmup_ratio <= 1.0:
                raise ValueError(f'warmup_ratio must be in (0, 1], got {warmup_ratio}')
            if end is None or math.isinf(end):
                raise ValueError('warmup_ratio needs the number of epochs (train_cfg.max_epochs)')
            total_steps = (end - begin) * epoch_length // accumulative_counts
            warmup_steps = max(1, int(round(warmup_ratio * total_steps)))
            source = f'warmup_ratio={warmup_ratio} of {total_steps} optimizer steps'
        else:
            source = 'warmup_steps (warmup_ratio unset)'
        print_log(f'lr warm-up: {warmup_steps} optimizer steps ({source}); '
                  f'{warmup_steps * accumulative_counts} iterations with '
                  f'accumulative_counts={accumulative_counts}', logger='current')
        return cls(optimizer, warmup_steps=warmup_steps,
                   accumulative_counts=accumulative_counts,
                   begin=int(begin * epoch_length), last_step=last_step, verbose=verbose)
