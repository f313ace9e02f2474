from .warmup import RTDETRv2LinearWarmupLR

__all__ = ['RTDETRv2LinearWarmupLR']
