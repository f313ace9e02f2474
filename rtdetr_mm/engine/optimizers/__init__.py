from .param_groups import RTDETRv2OptimWrapperConstructor

__all__ = ['RTDETRv2OptimWrapperConstructor']
