from .mixed_precision import RTDETRv2AmpOptimWrapper
from .optim_wrapper import RTDETRv2OptimWrapper, agree_nonfinite
from .param_groups import RTDETRv2OptimWrapperConstructor

__all__ = ['RTDETRv2AmpOptimWrapper', 'RTDETRv2OptimWrapper', 'RTDETRv2OptimWrapperConstructor',
           'agree_nonfinite']
