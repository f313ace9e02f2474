"""EMA of the weights, updated once per optimizer step (official ModelEMA)."""
from typing import Optional

from mmdet.registry import HOOKS
from mmengine.hooks import EMAHook


@HOOKS.register_module()
class RTDETRv2EMAHook(EMAHook):
    """mmengine's ``EMAHook`` (``ExpMomentumEMA``: the official ``ModelEMA``
    decay ``(1 - momentum) * (1 - exp(-k / warmup))`` at update ``k``) with
    two changes:

    - it updates once per optimizer step, not once per iteration: with
      ``optim_wrapper.accumulative_counts = A`` the weights change every
      ``A`` micro-batches, and averaging the same weights ``A`` times would
      shorten the EMA horizon and its warm-up by ``A``;
    - ``warmup_steps=None`` makes the EMA warm-up (``ExpMomentumEMA.gamma``,
      official 2000) equal to the LR warm-up of ``RTDETRv2LinearWarmupLR`` in
      optimizer steps, so both scale with the run (WARMUP_RATIO). Without
      such a scheduler it falls back to 2000.

    The EMA weights are what validation, ``save_best``, the saved
    ``state_dict`` (mmengine swaps them in) and so conversion and export use.

    Args:
        momentum (float): ``1 - decay`` (official decay 0.9999 -> 1e-4).
        warmup_steps (int, optional): EMA warm-up in optimizer steps; None
            follows the LR warm-up.
        update_buffers (bool): Average buffers (BN statistics) too.
        begin_iter (int): As ``EMAHook``.
        strict_load (bool): As ``EMAHook``.
    """
    priority = 49  # just above NORMAL, as mmdet's DETR configs

    def __init__(self, momentum: float = 1e-4, warmup_steps: Optional[int] = None,
                 update_buffers: bool = True, begin_iter: int = 0,
                 strict_load: bool = False) -> None:
        super().__init__(ema_type='ExpMomentumEMA', strict_load=strict_load,
                         begin_iter=begin_iter, momentum=momentum, gamma=2000,
                         update_buffers=update_buffers)
        self.warmup_steps = warmup_steps

    def before_run(self, runner) -> None:
        """Resolve the EMA warm-up, then build the EMA model."""
        self.ema_cfg['gamma'] = self._resolve_warmup(runner)
        runner.logger.info(f'RTDETRv2EMAHook: EMA warm-up {self.ema_cfg["gamma"]} optimizer '
                           'steps, one EMA update per optimizer step')
        super().before_run(runner)

    def _resolve_warmup(self, runner) -> int:
        if self.warmup_steps is not None:
            return int(self.warmup_steps)
        schedulers = runner.param_schedulers
        if isinstance(schedulers, dict):  # several optimizers
            schedulers = [s for group in schedulers.values() for s in group]
        for scheduler in schedulers or []:
            steps = getattr(scheduler, 'warmup_steps', None)
            if isinstance(steps, int):
                return steps
        return 2000

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs: Optional[dict] = None) -> None:
        """Update the EMA only at iterations where the optimizer stepped."""
        optim_wrapper = runner.optim_wrapper
        if hasattr(optim_wrapper, 'should_update') and not optim_wrapper.should_update():
            return
        super().after_train_iter(runner, batch_idx, data_batch, outputs)
