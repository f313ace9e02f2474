from .aug_switch_hook import RTDETRv2AugSwitchHook
from .checkpoint_hook import RTDETRv2CheckpointHook
from .class_mismatch_hook import RTDETRv2ClassMismatchHook, drop_class_mismatch
from .dataset_check_hook import RTDETRv2DatasetCheckHook
from .ema_hook import RTDETRv2EMAHook
from .nonfinite_hook import (NonFiniteLossError, NonFiniteWeightsError,
                             RTDETRv2NonFiniteLossHook, agree_nonfinite)
from .random_state_hook import RTDETRv2RandomStateHook

__all__ = ['RTDETRv2AugSwitchHook', 'RTDETRv2CheckpointHook', 'RTDETRv2ClassMismatchHook',
           'drop_class_mismatch', 'RTDETRv2DatasetCheckHook',
           'RTDETRv2EMAHook',
           'RTDETRv2NonFiniteLossHook', 'NonFiniteLossError', 'NonFiniteWeightsError',
           'agree_nonfinite', 'RTDETRv2RandomStateHook']
