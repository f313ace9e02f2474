from .checkpoint_safety import register_safe_globals, safe_load_checkpoint
from .hooks import RTDETRv2AugSwitchHook, RTDETRv2CheckpointHook, RTDETRv2EMAHook
from .loops import RTDETRv2EpochBasedTrainLoop
from .optimizers import (RTDETRv2AmpOptimWrapper, RTDETRv2OptimWrapper,
                         RTDETRv2OptimWrapperConstructor)
from .runner import RTDETRv2Runner
from .schedulers import RTDETRv2LinearWarmupLR

__all__ = ['register_safe_globals', 'safe_load_checkpoint', 'RTDETRv2AugSwitchHook',
           'RTDETRv2CheckpointHook', 'RTDETRv2EMAHook', 'RTDETRv2EpochBasedTrainLoop',
           'RTDETRv2AmpOptimWrapper', 'RTDETRv2OptimWrapper', 'RTDETRv2OptimWrapperConstructor',
           'RTDETRv2Runner',
           'RTDETRv2LinearWarmupLR']
