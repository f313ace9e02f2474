from .checkpoint_safety import register_safe_globals, safe_load_checkpoint
from .hooks import RTDETRv2AugSwitchHook
from .optimizers import RTDETRv2OptimWrapperConstructor

__all__ = ['register_safe_globals', 'safe_load_checkpoint', 'RTDETRv2AugSwitchHook',
           'RTDETRv2OptimWrapperConstructor']
