from .mixed_precision import RTDETRv2AmpOptimWrapper
from .param_groups import RTDETRv2OptimWrapperConstructor

__all__ = ['RTDETRv2AmpOptimWrapper', 'RTDETRv2OptimWrapperConstructor']
