from .aug_switch_hook import RTDETRv2AugSwitchHook

__all__ = ['RTDETRv2AugSwitchHook']
