from .aug_switch_hook import RTDETRv2AugSwitchHook
from .checkpoint_hook import RTDETRv2CheckpointHook
from .dataset_check_hook import RTDETRv2DatasetCheckHook
from .ema_hook import RTDETRv2EMAHook

__all__ = ['RTDETRv2AugSwitchHook', 'RTDETRv2CheckpointHook', 'RTDETRv2DatasetCheckHook',
           'RTDETRv2EMAHook']
