from .rtdetrv2 import RTDETRv2

__all__ = ['RTDETRv2']
