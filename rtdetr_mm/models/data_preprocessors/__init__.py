from .batch_resize import RTDETRv2BatchResize

__all__ = ['RTDETRv2BatchResize']
